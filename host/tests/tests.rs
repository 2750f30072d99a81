//! Integration tests: see the topic modules.
