"""reproduce.atlas.pages: numbers as they read, sortable rows with the value to sort by, columns
that are undefined everywhere left out and said so, markers filled once, and a head page that
links its neighbours and says why a value is missing."""

from reproduce.atlas import pages, records


def _record():
  score = lambda v, b: records.number(v, b, "layer 0 reads no earlier previous-token head",
                                      "not measured")
  heads = []
  for l, h in ((0, 0), (0, 1)):
    scores = {k: score(0.5 + h / 10, 0.01) for k in records.SCORES}
    scores["kcomp_qk_positivity"] = score(None, None)
    heads.append({"layer": l, "head": h, "name": f"L{l}H{h}",
                  "roles": [{"role": "previous_token", "criterion": "previous-token score ≥ 0.3",
                             "value": 0.5, "threshold": 0.3}] if h == 0 else
                  [{"role": "unlabelled", "criterion": "no role's criterion is met",
                    "value": None, "threshold": None}],
                  "scores": scores, "composition": {"in": {}, "out": {}},
                  "checks": [{"id": k, "status": "disagrees" if h else "n/a", "detail": "why"}
                             for k in records.CHECKS],
                  "undefined": "no tokenizer", "eigenvalues": {"ov": [], "qk": []}})
  return {"label": "m<1>", "source": "", "heads": heads,
          "shape": {"n_layers": 1, "n_heads": 2, "d_head": 4, "d_model": 8, "d_vocab": 9,
                    "n_ctx": 5, "pos": "shortformer", "norm": "none"},
          "held_out_loss": records.number(None, None, "no tokenizer"),
          "icl_score": records.number(None, None, "no tokenizer"),
          "composition_baseline": 0.1, "random_init": "a fresh init", "bos": "token 0",
          "measured_on": {"ablations": "no tokenizer", "positional": "probe",
                          "tables": "every token", "text_pairs": "no tokenizer"},
          "thresholds": {"role_threshold": 0.3, "copying_threshold": 0.5, "inactive_ratio": 1e-6,
                         "positional_max_tv": 0.1, "corner": 0.9},
          "checks": {k: "rule" for k in records.CHECKS},
          "scores": {k: {"short": s, "what": w} for k, (s, w) in records.SCORES.items()}}


def test_numbers_read_with_fixed_decimals():
  assert pages.fmt(0.123456) == "0.12" and pages.fmt(-3e-9, signed=True) == "0.00"
  assert pages.fmt(0.5, 3, signed=True) == "+0.500" and pages.fmt(None) == "—"
  assert pages.fmt(123456.0) == "1.23e+05"
  assert pages.folder_name("model <x>.npz") == "model__x_.npz"


def test_index_rows_sort_by_their_values_and_say_what_is_left_out():
  record = _record()
  table = pages.head_table(record)
  assert table.count("<tr>") == 3 and "data-v='0.6'" in table  # L0H1's scores sort by value
  assert "href='m_1_/L0H1.html'" in table
  assert "K-QK+" not in table.split("</table>")[0]  # undefined for every head: left out …
  assert "Not shown, undefined for every head: K-QK+ (layer 0 reads" in table  # … and said so
  assert table.count("⚠") == 3  # L0H1's three disagreeing checks
  index = pages.index_page([record])
  assert "m&lt;1&gt;" in index and index.count("<script>") == 1 and "sort by" in index


def test_page_markers_are_filled_once_and_head_pages_link_their_neighbours():
  assert "{{BODY}}" in pages.page("t", "{{BODY}}")  # what goes in is never expanded again
  page = pages.head_page(_record(), 0)
  for link in ("L0H1.html", "../index.html", "attention.html#L0H0"):
    assert f"href='{link}'" in page
  assert "Undefined: no tokenizer" in page and "<script" not in page
  assert "layer 0 reads no earlier previous-token head" in page
