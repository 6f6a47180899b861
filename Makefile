# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test bench examples gallery clean

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
# The package's bytecode is compiled first, as `pip install` does for an installed package: the
# editable install here never writes it where PYTHONDONTWRITEBYTECODE is set (this machine), and
# compiling convfilter's sources again costs every run about 30 ms.
bench: $(STAMP)
	$(BIN)/python -m compileall -q convfilter
	$(BIN)/python benchmarks/bench.py

# The pictures of the README (docs/), made by the commands the README shows.
CF := $(BIN)/convfilter
examples: $(STAMP)
	@mkdir -p docs
	$(CF) apply samples/astronaut.jpg --color -k sharpen -o docs/color_sharpen.jpg --quality 85 --overwrite
	$(CF) run samples/edges.toml samples/astronaut.jpg -o docs/edges.jpg --quality 85 --overwrite
	$(CF) run samples/thumbnail.toml samples/astronaut.jpg -o docs/thumbnail.jpg --quality 85 --overwrite
	$(CF) run samples/relief.toml samples/astronaut.jpg -o docs/relief.jpg --quality 85 --overwrite
	$(CF) pool samples/astronaut.jpg --color --mode stochastic --size 4 --seed 1 -o docs/stochastic.jpg --quality 85 --overwrite
	$(CF) pool samples/rocket.jpg --to 320x240 -o docs/adaptive.jpg --quality 85 --overwrite
	$(CF) upsample docs/thumbnail.jpg --color --factor 4 --mode bilinear -o docs/upsampled.jpg --quality 85 --overwrite

# The README's gallery: every built-in kernel on a sample photo, labelled.
gallery: $(STAMP)
	@mkdir -p docs
	$(CF) kernels preview samples/camera.png -o docs/gallery.jpg --size 200 --overwrite

clean:
	rm -rf $(VENV) out build *.egg-info
