# The two commands of the quick start, and the CI checks. Each target first makes sure the
# ONNX Runtime library is in third_party/onnxruntime/ (scripts/setup-onnxruntime: one pinned,
# checksum-verified wheel from PyPI; nothing is downloaded at run time).

.PHONY: demo test check setup weld-model

setup:
	scripts/setup-onnxruntime

# The main job on the embedded default (SQLite + a local artifact folder).
demo: setup
	cargo run --release -p vigil-cli -- demo

# The whole test suite; the engine conformance tests again with tract compiled in, so both
# engines are held to the same golden outputs; and the Open Inference Protocol test with the
# official Python client (tritonclient, from PyPI) against a real `vigil serve`.
test: setup
	cargo test --workspace --locked
	cargo test --locked -p vigil-engine -p vigil-train --features tract
	tests/oip/run.sh

# What CI runs: formatting, lints, then the tests.
check:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
	$(MAKE) test

# Reproduces the shipped weld model (models/weldnet.tar) from data/weld: same seed, two
# training threads, so the same weights; only the manifest's creation time differs, and the
# reference profile's source text (the shipped one was rebuilt with `vigil bundle reference
# models/weldnet.tar --data data/weld/manifest.csv --split val --stats-data
# data/weld/manifest.csv --block-length 125`, the trainer's own settings).
weld-model: setup
	rm -rf target/weldnet
	cargo run --release -p vigil-cli -- train --data data/weld/manifest.csv --out target/weldnet --threads 2
	rm -f models/weldnet.tar
	cargo run --release -p vigil-cli -- bundle pack target/weldnet --out models/weldnet.tar
