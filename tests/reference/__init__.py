"""Reference implementations we did not write, vendored unchanged so tests can compare against them."""
