//! `kvs plugins new`: a ready crate for a new plug-in, outside any kvs checkout.
//!
//! The sources are the checked-in templates (`templates/`, `wasm-plugins/templates/`),
//! embedded at build time with the declared name replaced; the contract crate is the
//! released `kvs-plugin-api` of the minor this kvs speaks
//! (`compat/releases/kvs-plugin-api-1.N.P.crate`), embedded too and unpacked into the
//! new crate's `vendor/`, so it builds with no kvs source and no registry of ours.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use kvs_plugin_api::{API_MAJOR, API_MINOR};

/// The released contract crate this kvs speaks, as `cargo package` wrote it.
const CONTRACT_CRATE: &[u8] =
    include_bytes!("../../../../compat/releases/kvs-plugin-api-1.8.1.crate");
/// Its directory inside the archive, and under `vendor/` in a new crate.
const CONTRACT_DIR: &str = "kvs-plugin-api-1.8.1";
// A new minor means embedding its crate: this fails to build until `CONTRACT_CRATE` is
// the release of the minor the host speaks.
const _: () = assert!(API_MAJOR == 1 && API_MINOR == 8);

/// What kind of plug-in to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// A transaction logger: makes batches of writes durable and replays them.
    Logger,
    /// A frontend: serves clients over a protocol.
    Frontend,
}

/// How a WASM frontend talks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Protocol {
    /// The host's HTTP listener hands it each request (`fn(HttpRequest) -> HttpResponse`,
    /// or from plugin-api 1.8 a borrowing `fn(&HttpRequestRef, &mut HttpResponseWriter)`).
    Http,
    /// The host's TCP listener hands it each connection's bytes (its own protocol).
    Stream,
}

/// One template: its source, what it depends on, and how to check what it builds.
struct Template {
    /// `src/lib.rs`.
    source: &'static str,
    /// The name the source declares, replaced by the new plug-in's.
    declared: &'static str,
    wasm: bool,
    /// `[dependencies]` lines besides the contract crate.
    dependencies: &'static str,
    /// Its config table for `kvs plugins check`.
    check_table: &'static str,
    /// What it is, for its README.
    what: &'static str,
    /// `logger` or `frontend`: the kvs flag that names it.
    role: &'static str,
}

const NATIVE_LOGGER: Template = Template {
    source: include_str!("../../../../templates/native-logger/src/lib.rs"),
    declared: "template-logger",
    wasm: false,
    dependencies: "serde = { version = \"1\", features = [\"derive\"] }\ntoml = \"0.8\"\n",
    check_table: "path = \"{tmp}/NAME.log\"",
    what: "a native logger: one hex line per event in the file its `path` names",
    role: "logger",
};

const NATIVE_FRONTEND: Template = Template {
    source: include_str!("../../../../templates/native-frontend/src/lib.rs"),
    declared: "template-frontend",
    wasm: false,
    dependencies: "",
    check_table: "listen = \"127.0.0.1:0\"",
    what: "a native frontend: read-only HTTP on `std::net`, at its `listen` address",
    role: "frontend",
};

const WASM_LOGGER: Template = Template {
    source: include_str!("../../../../wasm-plugins/templates/logger/src/lib.rs"),
    declared: "template-wasm-logger",
    wasm: true,
    dependencies: "",
    check_table: "",
    what: "a WebAssembly logger: one hex line per event in its granted data directory",
    role: "logger",
};

const WASM_HTTP: Template = Template {
    source: include_str!("../../../../wasm-plugins/templates/frontend/src/lib.rs"),
    declared: "template-wasm-frontend",
    wasm: true,
    dependencies: "serde = { version = \"1\", features = [\"derive\"] }\n\
                   toml = { version = \"0.8\", default-features = false, features = [\"parse\"] }\n",
    check_table: "listen = \"127.0.0.1:0\"",
    what: "a WebAssembly HTTP frontend: the host's listener hands it each request",
    role: "frontend",
};

const WASM_STREAM: Template = Template {
    source: include_str!("../../../../wasm-plugins/templates/stream/src/lib.rs"),
    declared: "template-wasm-stream",
    wasm: true,
    dependencies: "",
    check_table: "listen = \"127.0.0.1:0\"",
    what: "a WebAssembly stream frontend: a line protocol (GET/SET/DEL/QUIT) over TCP",
    role: "frontend",
};

const WASM_CARGO_CONFIG: &str =
    include_str!("../../../../wasm-plugins/templates/frontend/.cargo/config.toml");

fn template(kind: Kind, wasm: bool, protocol: Option<Protocol>) -> Result<&'static Template> {
    Ok(match (kind, wasm, protocol) {
        (Kind::Logger, _, Some(_)) => bail!("--protocol is for frontends; a logger has none"),
        (Kind::Frontend, false, Some(_)) => bail!(
            "--protocol is for WASM frontends (add --wasm); a native frontend owns its \
             sockets and speaks whatever it likes"
        ),
        (Kind::Logger, false, None) => &NATIVE_LOGGER,
        (Kind::Logger, true, None) => &WASM_LOGGER,
        (Kind::Frontend, false, None) => &NATIVE_FRONTEND,
        (Kind::Frontend, true, None | Some(Protocol::Http)) => &WASM_HTTP,
        (Kind::Frontend, true, Some(Protocol::Stream)) => &WASM_STREAM,
    })
}

/// `kvs plugins new NAME ...`: writes the crate into `dir/NAME` and says what to do next.
pub(crate) fn run(
    name: &str,
    kind: Kind,
    wasm: bool,
    protocol: Option<Protocol>,
    dir: &Path,
) -> Result<()> {
    kvs_plugin_api::handshake::validate_name(name)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{name:?} cannot be a plug-in's name"))?;
    if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        bail!("{name:?}: a plug-in's crate name must start with a letter");
    }
    let template = template(kind, wasm, protocol)?;
    let root = dir.join(name);
    if root.exists() {
        bail!(
            "{} already exists: choose another name, or remove it first",
            root.display()
        );
    }
    write_crate(&root, name, template)
        .with_context(|| format!("cannot write the new crate in {}", root.display()))?;
    let artifact = artifact(name, template.wasm);
    say!(
        "created {} ({}), against plugin-api {API_MAJOR}.{API_MINOR}\n\n\
         next:\n  cd {}\n  cargo build --release\n  kvs plugins check {artifact}{}\n\
         then copy {artifact} into kvs's plugins directory (see {}/README.md)",
        root.display(),
        template.what,
        root.display(),
        check_args(template, name),
        root.display(),
    );
    Ok(())
}

/// Where `cargo build --release` puts the plug-in, relative to its crate.
fn artifact(name: &str, wasm: bool) -> String {
    let stem = name.replace('-', "_");
    if wasm {
        format!("target/wasm32-wasip1/release/{stem}.wasm")
    } else {
        format!("target/release/lib{stem}.so")
    }
}

fn check_args(template: &Template, name: &str) -> String {
    if template.check_table.is_empty() {
        String::new()
    } else {
        format!(" --config '{}'", template.check_table.replace("NAME", name))
    }
}

fn write_crate(root: &Path, name: &str, template: &Template) -> Result<()> {
    std::fs::create_dir_all(root.join("src"))?;
    let source = template
        .source
        .replace(template.declared, name)
        .replace("description: \"template: ", "description: \"");
    std::fs::write(root.join("src/lib.rs"), source)?;
    std::fs::write(root.join("Cargo.toml"), manifest(name, template))?;
    std::fs::write(root.join(".gitignore"), "/target\n")?;
    std::fs::write(root.join("README.md"), readme(name, template))?;
    if template.wasm {
        std::fs::create_dir_all(root.join(".cargo"))?;
        std::fs::write(root.join(".cargo/config.toml"), WASM_CARGO_CONFIG)?;
    }
    unpack_contract(&root.join("vendor"))
}

fn manifest(name: &str, template: &Template) -> String {
    let contract = if template.wasm {
        format!(
            "kvs-plugin-api = {{ path = \"vendor/{CONTRACT_DIR}\", default-features = false, \
             features = [\"guest\"] }}"
        )
    } else {
        format!("kvs-plugin-api = {{ path = \"vendor/{CONTRACT_DIR}\" }}")
    };
    let profile = if template.wasm {
        "\n# Speed over size: a guest runs on every request.\n[profile.release]\n\
         opt-level = 3\nlto = true\nstrip = true\n"
    } else {
        ""
    };
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
         rust-version = \"1.95\"\npublish = false\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\n\
         # The contract, plugin-api {API_MAJOR}.{API_MINOR}, as released with kvs (unpacked by `kvs plugins new`).\n\
         {contract}\n{}\n\
         # A crate of its own, not part of any workspace around it.\n\
         [workspace]\nexclude = [\"vendor\"]\n{profile}",
        template.dependencies
    )
}

fn readme(name: &str, template: &Template) -> String {
    let artifact = artifact(name, template.wasm);
    let target = if template.wasm {
        "\nIt builds for WebAssembly (`.cargo/config.toml`): `rustup target add wasm32-wasip1` once.\n"
    } else {
        ""
    };
    format!(
        "# {name}\n\n{}, written by `kvs plugins new` against plugin-api \
         {API_MAJOR}.{API_MINOR}\n(the contract crate is in `vendor/{CONTRACT_DIR}`; its docs: \
         `cargo doc --open`).\n{target}\n\
         ```sh\ncargo build --release\nkvs plugins check {artifact}{}\n\
         cp {artifact} /path/to/kvs/plugins/      # kvs's plugins directory\n```\n\n\
         Then name it: `kvs --{} {name}` or in config.toml, with its table under\n\
         `[plugins.{name}]`. The guide: docs/writing-plugins.md in kvs's repository.\n",
        capitalise(template.what),
        check_args(template, name),
        template.role,
    )
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// Unpacks the embedded contract crate into `vendor/`.
fn unpack_contract(vendor: &Path) -> Result<()> {
    std::fs::create_dir_all(vendor)?;
    let archive = flate2::read::GzDecoder::new(CONTRACT_CRATE);
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path: PathBuf = entry.path()?.into_owned();
        // Only the crate's own directory, and nothing that climbs out of it.
        if !path.starts_with(CONTRACT_DIR)
            || path
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            bail!(
                "the embedded contract crate holds an unexpected {}",
                path.display()
            );
        }
        entry.unpack_in(vendor)?;
    }
    Ok(())
}
