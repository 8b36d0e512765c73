"""Gold sets: hand-checked input → reference output for the three LLM stages, and `goldeval` to score any model
on them (format and metric definitions: `data/gold/README.md`)."""
