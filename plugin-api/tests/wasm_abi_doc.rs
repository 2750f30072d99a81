//! docs/wasm-abi.md, the WASM contract as a language-neutral specification, lists every
//! host function and export of [`wasm_abi`]'s table with the minor that introduced it
//! and its WebAssembly type: a row added to the table (a new minor's host function or
//! export) fails this test until the specification describes it.

use kvs_plugin_api::wasm_abi::{self, ValType};

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/wasm-abi.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn signature(params: &[ValType], results: &[ValType]) -> String {
    let list = |types: &[ValType]| {
        types
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let results = if results.is_empty() {
        "()".to_string()
    } else {
        list(results)
    };
    format!("({}) -> {results}", list(params))
}

#[test]
fn the_specification_lists_every_host_function_and_export() {
    let spec = spec();
    assert!(
        spec.contains(&format!("`{}`", wasm_abi::HOST_MODULE)),
        "docs/wasm-abi.md does not name the host functions' module {}",
        wasm_abi::HOST_MODULE
    );
    let mut missing = Vec::new();
    for f in wasm_abi::HOST_FUNCTIONS {
        let row = format!(
            "| `{}` | 1.{} | `{}` |",
            f.name,
            f.since_minor,
            signature(f.params, f.results)
        );
        if !spec.lines().any(|l| l.starts_with(&row)) {
            missing.push(row);
        }
    }
    for e in wasm_abi::GUEST_EXPORTS {
        let row = format!(
            "| `{}` | 1.{} | `{}` | {} | {} |",
            e.name,
            e.since_minor,
            signature(e.params, e.results),
            e.exporter.describe(),
            if e.required { "yes" } else { "no" }
        );
        if !spec.lines().any(|l| l.starts_with(&row)) {
            missing.push(row);
        }
    }
    assert!(
        missing.is_empty(),
        "docs/wasm-abi.md lacks these rows of its host-function and export tables \
         (describe each in its own section too):\n{}",
        missing.join("\n")
    );
}
