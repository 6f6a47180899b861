# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench clean

# The virtual environment, rebuilt when pyproject.toml changes. torch comes from pip as
# declared (on this machine pip finds torch 2.14.1 / torchvision 0.29.1 on local disk).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --editable '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	@mkdir -p out
	$(BIN)/convfilter apply samples/camera.png -k sharpen -o out/camera_sharpen.png --overwrite
	$(BIN)/convfilter apply samples/astronaut.jpg -k sobel-x --range abs -o out/astronaut_sobel-x.png --overwrite
	$(BIN)/convfilter pool samples/rocket.jpg --size 2 --mode max -o out/rocket_pool2.png --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest

# convfilter against OpenCV, Pillow, ImageMagick (if installed) and the codec floor; several minutes.
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py

clean:
	rm -rf $(VENV) out build *.egg-info
