from inferd.cli.main import app

app(prog_name="inferd")
