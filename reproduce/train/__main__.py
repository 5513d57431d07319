from reproduce.train.loop import run_cli

run_cli()
