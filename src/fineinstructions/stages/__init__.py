"""One module per stage of the recipe, named with the paper's words. Each has a `*Config` and a `run(config)`."""

STAGES = ("queries", "templatize")
