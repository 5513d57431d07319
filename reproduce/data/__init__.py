"""From text files to token windows: which files and which split (``corpus``), reading one file
(``files``), the token store and its tokenizer (``store``), reading a user's ``tokenizer.json``
(``tokenizer``), and training batches and evaluation windows (``batches``)."""
