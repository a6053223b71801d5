# The build every Rust server shares, included by its Makefile after it sets NAME: one
# release binary from a locked Cargo.lock (no crate version drifts between machines).
CARGO ?= cargo

$(NAME): $(wildcard src/*.rs) Cargo.toml Cargo.lock
	$(CARGO) build --release --locked
	cp target/release/$(NAME) $(NAME)

clean:
	if command -v $(CARGO) >/dev/null 2>&1; then $(CARGO) clean; fi
	rm -rf target $(NAME)

toolchain:
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "cargo not found on PATH"; exit 1; }

.PHONY: clean toolchain
