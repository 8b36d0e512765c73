"""Parquet schemas at every stage boundary: the documented contract between stages.

queries/     query_id, source, query
templatize/  template_id, query_id, source, query, template, compatible_document_description, num_slots,
             alignment, model_id, prompt_fingerprint
index/       template_id, num_slots (the bank) + index.faiss, ids.parquet, meta.json
match/       document_id, template_id, chunk, score, rank
instantiate/ pair_id, document_id, template_id, chunk, match_score, template, instruction, answer, answer_raw,
             grounding, excerpts, status, model_id, prompt_fingerprint
judge/       the instantiate columns + score, judgement, judge_model_id, judge_prompt_fingerprint (kept: score >= min)
budget/instructions/  text, document_id, pair_id, num_tokens      (the instruction corpus)
budget/standard/      text, document_id, num_tokens               (the same documents as a standard corpus)
rephrase/    text, document_id, chunk, model_id, prompt_fingerprint    (WRAP-style baseline corpus)
rejects/     the stage's input columns (as far as known) + reason (+ raw_output for LLM stages)
"""

import pyarrow as pa

QUERIES = pa.schema(
    [
        ("query_id", pa.string()),  # the input's id column, or a content hash when the input has none
        ("source", pa.string()),  # where the query came from (input's source column, or the file name)
        ("query", pa.string()),  # whitespace-normalised query text
    ]
)

QUERIES_REJECTS = pa.schema([*QUERIES, ("reason", pa.string())])

TEMPLATES = pa.schema(
    [
        ("template_id", pa.string()),  # hash of the normalised template text (unique after dedup)
        ("query_id", pa.string()),
        ("source", pa.string()),
        ("query", pa.string()),
        ("template", pa.string()),  # the query with <fi>slot description</fi> slots
        ("compatible_document_description", pa.string()),
        ("num_slots", pa.int32()),
        ("alignment", pa.float32()),  # share of the template's fixed words taken in order from the query
        ("model_id", pa.string()),  # weights that wrote it (name/path + revision or file digest)
        ("prompt_fingerprint", pa.string()),  # hash of the prompt format + sampling settings
    ]
)

TEMPLATES_REJECTS = pa.schema(
    [
        ("query_id", pa.string()),
        ("source", pa.string()),
        ("query", pa.string()),
        ("template", pa.string()),
        ("compatible_document_description", pa.string()),
        ("raw_output", pa.string()),
        ("reason", pa.string()),
        ("model_id", pa.string()),
        ("prompt_fingerprint", pa.string()),
    ]
)

EMBEDDINGS = pa.schema(
    [
        ("template_id", pa.string()),
        ("num_slots", pa.int32()),
        ("embedding", pa.list_(pa.float32())),  # unit vector of the compatible document description
        ("embedder", pa.string()),  # weights fingerprint of the embedder
    ]
)

INDEX_BANK = pa.schema([("template_id", pa.string()), ("num_slots", pa.int32())])

INDEX_REJECTS = pa.schema([("template_id", pa.string()), ("compatible_document_description", pa.string()),
                           ("reason", pa.string())])

MATCHES = pa.schema(
    [
        ("document_id", pa.string()),
        ("template_id", pa.string()),
        ("chunk", pa.int32()),  # 0 = the global vector, 1..K = the Gaussian-pooled local vector that found it
        ("score", pa.float32()),  # cosine between that document vector and the template description
        ("rank", pa.int32()),  # draw order within the document, 1 first
    ]
)

MATCH_REJECTS = pa.schema(
    [
        ("document_id", pa.string()),
        ("reason", pa.string()),  # empty | no_candidates
        ("best_score", pa.float32()),  # the best cosine seen, so a threshold can be judged
    ]
)

PAIRS = pa.schema(
    [
        ("pair_id", pa.string()),  # hash of (document_id, template_id)
        ("document_id", pa.string()),
        ("template_id", pa.string()),
        ("chunk", pa.int32()),  # the document vector that matched (0 global, 1..K local): where the window was taken
        ("match_score", pa.float32()),
        ("template", pa.string()),
        ("instruction", pa.string()),  # the template with every slot filled from the document
        ("answer", pa.string()),  # the answer with every <excerpt> expanded to the document's exact text
        ("answer_raw", pa.string()),  # the answer as the model wrote it (with <excerpt> tags)
        ("grounding", pa.float32()),  # share of the answer's characters copied from the document by excerpts
        ("excerpts", pa.int32()),  # number of <excerpt> tags
        ("status", pa.string()),  # ok | the reject reason (null = the model said the template does not fit)
        ("model_id", pa.string()),
        ("prompt_fingerprint", pa.string()),
    ]
)

PAIRS_REJECTS = pa.schema([*PAIRS, ("raw_output", pa.string()), ("reason", pa.string())])

JUDGED = pa.schema(
    [
        *PAIRS,
        ("score", pa.int32()),  # 1-5, null when the judgement had no readable score
        ("judgement", pa.string()),  # the judge's raw output
        ("judge_model_id", pa.string()),
        ("judge_prompt_fingerprint", pa.string()),
    ]
)

JUDGED_REJECTS = pa.schema([*JUDGED, ("reason", pa.string())])

INSTRUCTION_CORPUS = pa.schema(
    [
        ("text", pa.string()),  # the formatted pair, e.g. "Instruction: ...\n\nAnswer: ..."
        ("document_id", pa.string()),
        ("pair_id", pa.string()),
        ("num_tokens", pa.int32()),  # tokens of `text` with the budget tokenizer (no special tokens)
    ]
)

STANDARD_CORPUS = pa.schema([("text", pa.string()), ("document_id", pa.string()), ("num_tokens", pa.int32())])

BUDGET_REJECTS = pa.schema([("document_id", pa.string()), ("pair_id", pa.string()), ("num_tokens", pa.int32()),
                            ("reason", pa.string())])

REPHRASED = pa.schema([("text", pa.string()), ("document_id", pa.string()), ("chunk", pa.int32()),
                       ("model_id", pa.string()), ("prompt_fingerprint", pa.string())])

REPHRASE_REJECTS = pa.schema([*REPHRASED, ("reason", pa.string())])
