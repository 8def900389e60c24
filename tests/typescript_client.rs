//! The TypeScript client (`clients/typescript`, npm package
//! `deputy-agent-client`): type-checked with `tsc` under `strict`, built
//! (ESM + `.d.ts`), and its `node --test` suite run against the `deputy`
//! binary built by this `cargo test` (a full turn, approvals, cancel of
//! stubborn agents with grandchildren, floods with a slow consumer,
//! malformed output).
//!
//! Needs `node` and `npm`: the pinned TypeScript is installed with `npm ci`
//! into a cache outside the checkout (see `common::npm`); later runs need no
//! network. The package is built in a scratch copy, so nothing is written to
//! the checkout. Without node or npm (or a registry) the tests fail saying
//! so, unless `DEPUTY_SKIP_NODE_TESTS=1`, which skips them and says so.

mod common;

use common::npm::{self, TsClientCopy};
use common::*;

fn skip() -> bool {
    npm::node_tests_skipped("TypeScript client tests")
}

/// The `pass N` / `fail N` counts of node's test runner (`# pass N` from
/// its TAP reporter, `ℹ pass N` from its spec reporter).
fn test_count(output: &str, what: &str) -> Option<usize> {
    output.lines().find_map(|l| {
        let l = l.trim();
        let rest = l.strip_prefix("# ").or_else(|| l.strip_prefix("ℹ "))?;
        rest.strip_prefix(what)?.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[test]
fn typescript_client_is_strict_typed_builds_and_passes_its_node_tests() {
    if skip() {
        return;
    }
    let copy = TsClientCopy::new();
    let tsconfig = std::fs::read_to_string(copy.package().join("tsconfig.json")).unwrap();
    assert!(tsconfig.contains("\"strict\": true"), "the package is type-checked under strict");

    copy.build();
    let dist = copy.package().join("dist");
    for file in ["index.js", "index.d.ts", "client.js", "client.d.ts", "protocol.js", "protocol.d.ts"] {
        assert!(dist.join(file).is_file(), "dist/{file} was not built");
    }
    // The package ships the protocol types generated from the Rust crate,
    // copied at build time (and schema/ itself is checked for freshness).
    let shipped = std::fs::read_to_string(copy.package().join("src/protocol.ts")).unwrap();
    let generated =
        std::fs::read_to_string(repo_root().join("schema/typescript/deputy-protocol.ts")).unwrap();
    assert_eq!(shipped, generated, "the build copies schema/typescript/deputy-protocol.ts");
    let declarations = std::fs::read_to_string(dist.join("protocol.d.ts")).unwrap();
    for name in [
        "PROTOCOL_VERSION",
        "ErrorCodes",
        "HostRequests",
        "AgentRequests",
        "UnknownEventMsg",
        "JsonRpcRequest",
    ] {
        assert!(declarations.contains(name), "dist/protocol.d.ts lacks {name}");
    }
    let package: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(copy.package().join("package.json")).unwrap()).unwrap();
    assert!(package.get("dependencies").is_none(), "no runtime dependencies: {}", package["dependencies"]);
    assert_eq!(package["type"], "module");

    // README's example, type-checked with the tests and run below.
    std::fs::write(copy.package().join("test/readme-example.ts"), readme_example()).unwrap();

    // `npm test`: tsc (strict) over the sources and tests, then node --test.
    let out = copy.npm_run("test", &[("DEPUTY_BIN", &deputy_bin())]);
    let text = npm::output_text(&out);
    assert!(out.status.success(), "the TypeScript client's tests failed:\n{text}");
    let passed = test_count(&text, "pass").unwrap_or_else(|| panic!("no `# pass N` line:\n{text}"));
    assert_eq!(test_count(&text, "fail"), Some(0), "{text}");
    assert!(passed >= 20, "only {passed} node tests ran:\n{text}");
    eprintln!("node --test: {passed} passed");

    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("node")
        .arg(copy.package().join("build/test/readme-example.js"))
        .current_dir(work.path())
        .env("DEPUTY_BIN", deputy_bin())
        .env("DEPUTY_HOME", home.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = npm::output_text(&out);
    assert!(out.status.success(), "README's TypeScript example failed:\n{text}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("hello from an editor\ndone\n"), "{text}");
    assert!(stdout.contains("kind: 'graceful'") && stdout.contains("exitCode: 0"), "{text}");
}

/// README's TypeScript example: the `ts` block after its marker.
fn readme_example() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let after = readme
        .split("<!-- typescript-example -->\n```ts\n")
        .nth(1)
        .expect("README has the TypeScript example");
    after[..after.find("```").unwrap()].to_owned()
}

#[test]
fn a_type_error_fails_the_strict_build() {
    if skip() {
        return;
    }
    let copy = TsClientCopy::new();
    // An implicit `any` and a possibly-undefined access: both only errors under strict.
    std::fs::write(
        copy.package().join("src/sloppy.ts"),
        "export function first(xs) { return xs[0]; }\nexport const n: number = [1][0];\n",
    )
    .unwrap();
    let out = copy.npm_run("build", &[]);
    let text = npm::output_text(&out);
    assert!(!out.status.success(), "a sloppy file passed tsc:\n{text}");
    assert!(text.contains("TS7006"), "implicit any is an error: {text}");
    assert!(text.contains("TS2322"), "unchecked index access is an error: {text}");
}
