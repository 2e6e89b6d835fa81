PYTHON ?= python3

.PHONY: env demo test test-fast data

# install the OpenMMLab stack and this package (idempotent)
env:
	bash tools/install_env.sh

# the main job: train + evaluate Mask R-CNN with RMT-T on the bundled demo data
demo: env
	$(PYTHON) tools/run_demo.py

# the test suite
test: env
	$(PYTHON) -m pytest tests/ -q

# the day-to-day loop: everything but the tests marked slow
test-fast:
	$(PYTHON) -m pytest tests/ -q -m "not slow"

# regenerate the bundled demo data (deterministic)
data:
	$(PYTHON) tools/dataset_converters/make_demo_data.py --out data/demo
