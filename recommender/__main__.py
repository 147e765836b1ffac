from recommender.cli import app

app(prog_name="catscans")
