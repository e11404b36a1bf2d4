"""The pipeline's stages, one module each, in the order the runner calls them.

prepare (ingest + split) -> features -> train (one candidate per model) -> select (winner,
rule baseline, refit) -> evaluate (test split) -> register (bundle, gate, registry) -> serve.
Each stage is a function with typed inputs and a frozen result; Ray work happens in
components.steps, called from here, and every stage's own logic is testable on pandas frames.
"""
