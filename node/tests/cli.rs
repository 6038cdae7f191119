//! The `tally` binary as a user runs it from a shell.

use std::process::{Command, Stdio};

/// `tally ... | head -1`: once the reader of its output is gone, a command stops quietly
/// (status 0, nothing on stderr) instead of panicking on the broken pipe.
#[test]
fn a_command_whose_reader_went_away_stops_quietly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["testnet", "init", "--validators", "4", "--accounts", "2000"])
        .arg("--out")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tally runs");
    // The reader goes away before reading anything.
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("tally exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

/// `tally bench --rate 0` has nothing to measure: it says so at once, naming the flag, instead
/// of running a network for half a minute and printing nothing.
#[test]
fn a_benchmark_without_load_is_refused_naming_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["bench", "--rate", "0"])
        .output()
        .expect("tally runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--rate"), "{stderr}");
}

/// Shell completion scripts name the commands, for every shell clap knows.
#[test]
fn completion_scripts_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["completions", shell])
            .output()
            .expect("tally runs");
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("devnet") && script.contains("keygen"),
            "{shell}: {script}"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(["completions", "tcsh"])
        .output()
        .expect("tally runs");
    assert!(!out.status.success());
}

/// A one-validator network as separate processes, for the commands that talk to a node.
struct Network {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    node: std::process::Child,
    api: String,
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.node.kill();
        let _ = self.node.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn tally(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .output()
        .expect("tally runs")
}

/// Runs `tally` and returns its stdout, failing the test with stderr when it fails.
fn tally_ok(args: &[&str]) -> String {
    let out = tally(args);
    assert!(
        out.status.success(),
        "tally {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn json(text: &str) -> serde_json::Value {
    assert_eq!(text.lines().count(), 1, "one JSON object per line: {text}");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

impl Network {
    fn start() -> Network {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_owned();
        let (api_port, p2p_port) = (free_port(), free_port());
        tally_ok(&[
            "testnet",
            "init",
            "--validators",
            "1",
            "--accounts",
            "4",
            "--api-base-port",
            &api_port.to_string(),
            "--p2p-base-port",
            &p2p_port.to_string(),
            "--out",
            root.to_str().expect("utf-8 path"),
        ]);
        let log = std::fs::File::create(root.join("node.log")).expect("log file");
        let node = Command::new(env!("CARGO_BIN_EXE_tally"))
            .args(["run", "--config", "node.toml", "--log-format", "json"])
            .current_dir(root.join("validator-0"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("tally run");
        let net = Network {
            _dir: dir,
            root,
            node,
            api: format!("http://127.0.0.1:{api_port}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let out = tally(&["--output", "json", "status", "--api", &net.api]);
            if out.status.success() && json(&String::from_utf8_lossy(&out.stdout))["height"] != 0 {
                return net;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_str().expect("utf-8 path").to_owned()
    }

    fn account(&self, j: usize) -> String {
        let key = std::fs::read_to_string(self.root.join(format!("accounts/account-{j}.key")))
            .expect("account key");
        let v: serde_json::Value = serde_json::from_str(&key).expect("key file");
        v["public_key"].as_str().expect("public key").to_owned()
    }
}

/// A transaction signed with no network (an air-gapped key), then dry-run, submitted and read
/// back, all through the CLI with `--output json`, as a script would; and the same reads in
/// text for people.
#[test]
fn a_payment_signed_offline_is_dry_run_submitted_and_read_back_as_json() {
    let net = Network::start();
    let status = json(&tally_ok(&[
        "--output", "json", "status", "--api", &net.api,
    ]));
    let chain_id = status["chain_id"].as_str().expect("chain id").to_owned();
    let expiry = (status["height"].as_u64().expect("height") + 500).to_string();
    let (payer, payee) = (net.account(0), net.account(1));
    let key = net.path("accounts/account-0.key");
    // Reads about an account are signed: without a key the CLI cannot ask, and another
    // account's key is told the account does not exist.
    let out = tally(&["account", "--api", &net.api, &payer]);
    assert!(!out.status.success());
    let other = net.path("accounts/account-1.key");
    let out = tally(&["account", "--api", &net.api, "--key", &other, &payer]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("account_not_found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = json(&tally_ok(&[
        "--output", "json", "account", "--api", &net.api, "--key", &key, &payer,
    ]));
    let usd_before = before["balances"]["USD"].as_u64().expect("USD balance");

    // Offline: no --api anywhere; the node is not asked.
    let body = net.path("body.json");
    let sign = |extra: &[&str]| {
        let mut args = vec![
            "tx",
            "sign",
            "--key",
            &key,
            "--chain-id",
            &chain_id,
            "--sequence",
            "0",
            "--expiry-height",
            &expiry,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[
            "transfer", "--to", &payee, "--asset", "USD", "--amount", "25",
        ]);
        args.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let args = sign(&["--out", &body]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let hash = tally_ok(&args).trim().to_owned();
    assert_eq!(hash.len(), 64, "{hash}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&body).expect("body")).expect("JSON body");
    assert!(written["tx"].is_string() && written.as_object().expect("object").len() == 1);
    // Without --out the body goes to stdout, byte for byte the same (signing is deterministic).
    let args = sign(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(json(&tally_ok(&args)), written);
    // What a node would refuse statelessly is refused where the key is, naming the check.
    let out = tally(&[
        "tx",
        "sign",
        "--key",
        &key,
        "--chain-id",
        &chain_id,
        "--sequence",
        "0",
        "--expiry-height",
        "9",
        "transfer",
        "--to",
        &payee,
        "--asset",
        "USD",
        "--amount",
        "0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("zero_amount"));

    let dry = json(&tally_ok(&[
        "--output",
        "json",
        "tx",
        "send",
        "--api",
        &net.api,
        "--dry-run",
        &body,
    ]));
    assert_eq!(dry["status"], "would_apply", "{dry}");
    assert_eq!(dry["hash"], hash.as_str());
    let final_ = json(&tally_ok(&[
        "--output", "json", "tx", "send", "--api", &net.api, "--wait", "--key", &key, &body,
    ]));
    assert_eq!(final_["status"], "committed", "{final_}");
    assert_eq!(final_["receipt"]["events"][0]["transferred"]["amount"], 25);
    let shown = json(&tally_ok(&[
        "--output", "json", "tx", "show", "--api", &net.api, "--key", &key, &hash,
    ]));
    assert_eq!(shown["height"], final_["height"]);
    let after = json(&tally_ok(&[
        "--output", "json", "account", "--api", &net.api, "--key", &key, &payer,
    ]));
    assert_eq!(after["balances"]["USD"].as_u64(), Some(usd_before - 25));
    assert_eq!(after["sequence"], 1);
    let genesis = json(&tally_ok(&[
        "--output", "json", "block", "--api", &net.api, "0",
    ]));
    assert_eq!(genesis["header"]["height"], 0);

    // A payment a compliance rule refuses (over the travel-rule threshold without the data).
    let big = (usd_before - 25).to_string();
    let out = tally(&[
        "--output", "json", "tx", "transfer", "--api", &net.api, "--key", &key, "--to", &payee,
        "--asset", "USD", "--amount", &big, "--wait",
    ]);
    assert!(
        !out.status.success(),
        "the refused payment fails the command"
    );
    let refused = json(&String::from_utf8_lossy(&out.stdout));
    // The payer reads its own receipt: compliance refused, the rule is not named to it.
    assert_eq!(
        refused["receipt"]["code"], "compliance_refused",
        "{refused}"
    );
    assert!(!refused.to_string().contains("travel_rule"), "{refused}");

    // The operator's log says what happened, as structured fields: the committed block with the
    // payment, and the refusal with its rule and version; never a name or an amount.
    let log = std::fs::read_to_string(net.root.join("node.log")).expect("node log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let committed = lines.iter().find(|l| {
        l["fields"]["message"] == "block committed" && l["fields"]["height"] == final_["height"]
    });
    let committed = committed.unwrap_or_else(|| panic!("no commit line in\n{log}"));
    assert_eq!(committed["fields"]["applied"], 1, "{committed}");
    let refusal = lines
        .iter()
        .find(|l| l["fields"]["message"] == "compliance: payment refused")
        .unwrap_or_else(|| panic!("no refusal line in\n{log}"));
    assert_eq!(
        refusal["fields"]["rule"], "travel_rule.missing",
        "{refusal}"
    );
    assert_eq!(refusal["fields"]["version"], 1, "{refusal}");
    assert_eq!(refusal["fields"]["tx"], refused["hash"], "{refusal}");
    assert!(!log.contains(&big), "no amount in the log");

    // The same reads for people.
    let text = tally_ok(&["account", "--api", &net.api, "--key", &key, &payer]);
    assert!(
        text.contains(&format!("balance  {} USD", usd_before - 25)),
        "{text}"
    );
    let text = tally_ok(&["tx", "show", "--api", &net.api, "--key", &key, &hash]);
    assert!(
        text.starts_with(&format!("{hash} committed at height")),
        "{text}"
    );
    let text = tally_ok(&["status", "--api", &net.api]);
    assert!(text.contains(&format!("chain    {chain_id}")), "{text}");

    // A regulator of DE reads the payer's account, then the node's access log, and checks the
    // chain offline; one changed byte fails the check.
    let eu = net.path("keys/regulator-eu.key");
    tally_ok(&["account", "--api", &net.api, "--key", &eu, &payer]);
    let log = tally_ok(&["audit", "access-log", "--api", &net.api, "--key", &eu]);
    let file = net.path("access-log.json");
    std::fs::write(&file, &log).expect("write log");
    let text = tally_ok(&["audit", "verify-access-log", &file]);
    assert!(text.contains("entries chain from the start"), "{text}");
    let page = json(&log);
    let lines = page["lines"].as_array().expect("lines");
    assert!(
        lines.len() >= 8,
        "the holder's reads and the regulator's: {page}"
    );
    let mine = lines
        .iter()
        .filter(|l| l["entry"]["target"] == format!("/v1/accounts/{payer}").as_str())
        .count();
    assert!(mine >= 1, "{page}");
    let tampered = log.replacen("/v1/accounts/", "/v1/accounts/0", 1);
    std::fs::write(&file, tampered).expect("write log");
    let out = tally(&["audit", "verify-access-log", &file]);
    assert!(!out.status.success(), "a changed entry verifies");
}

/// Travel-rule data goes with a transfer from the flags; half of it is refused naming the
/// missing flag, before anything is signed or sent.
#[test]
fn travel_rule_flags_fill_the_transfer_and_half_of_them_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("payer.key");
    let key = key.to_str().expect("utf-8 path");
    tally_ok(&["keygen", "--out", key]);
    let payee = "11".repeat(32);
    let base = [
        "tx",
        "sign",
        "--key",
        key,
        "--chain-id",
        "c",
        "--sequence",
        "3",
        "--expiry-height",
        "100",
        "transfer",
        "--to",
        &payee,
        "--asset",
        "EUR",
        "--amount",
        "150000",
    ];
    let out = tally(&[&base[..], &["--originator-name", "Ada Lovelace"]].concat());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--beneficiary-name"), "{stderr}");
    let out = tally(&[&base[..], &["--beneficiary-address", "Berlin"]].concat());
    assert!(
        !out.status.success(),
        "an address without a name is refused"
    );

    let body = json(&tally_ok(
        &[
            &base[..],
            &[
                "--originator-name",
                "Ada Lovelace",
                "--originator-birth",
                "1815-12-10, London",
                "--beneficiary-name",
                "Muster GmbH",
                "--beneficiary-address",
                "Unter den Linden 1, Berlin",
            ],
        ]
        .concat(),
    ));
    let bytes = hex::decode(body["tx"].as_str().expect("tx")).expect("hex");
    let signed = tally_ledger::tx::SignedTransaction::from_bytes(&bytes).expect("decodes");
    let verified = signed.verify("c").expect("a valid signature");
    let tally_ledger::tx::Payload::Transfer(t) = &verified.tx.payload else {
        panic!("not a transfer: {:?}", verified.tx.payload);
    };
    let travel = t.travel.as_ref().expect("travel-rule data");
    assert_eq!(travel.originator.name, "Ada Lovelace");
    assert_eq!(travel.originator.account, verified.tx.sender);
    assert_eq!(
        travel.originator.date_and_place_of_birth.as_deref(),
        Some("1815-12-10, London")
    );
    assert_eq!(travel.beneficiary.name, "Muster GmbH");
    assert_eq!(travel.beneficiary.account.to_string(), payee);
    assert_eq!(
        travel.beneficiary.address.as_deref(),
        Some("Unter den Linden 1, Berlin")
    );
    assert_eq!((verified.tx.sequence, verified.tx.expiry_height), (3, 100));
}

/// docs/api/README.md shows the JSON of every payload kind and operation; each example is one
/// that `tally tx sign` accepts and signs, and together they name every kind. A field name that
/// is not the type's (a typo) is refused, not silently dropped.
#[test]
fn every_documented_payload_is_one_the_cli_signs() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/api/README.md"
    ))
    .expect("docs/api/README.md");
    let section = doc
        .split("## Transaction payloads")
        .nth(1)
        .expect("a Transaction payloads section");
    let examples: Vec<&str> = section
        .split("```json\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("signer.key");
    let key = key.to_str().expect("utf-8 path");
    tally_ok(&["keygen", "--out", key]);
    let file = dir.path().join("payload.json");
    let file = file.to_str().expect("utf-8 path");
    let sign = |payload: &str| {
        std::fs::write(file, payload).expect("write payload");
        tally(&[
            "tx",
            "sign",
            "--key",
            key,
            "--chain-id",
            "docs",
            "--sequence",
            "0",
            "--expiry-height",
            "100",
            "payload",
            file,
        ])
    };
    let mut kinds = std::collections::BTreeSet::new();
    for example in &examples {
        let out = sign(example);
        assert!(
            out.status.success(),
            "{example}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(example).expect("JSON");
        let (kind, inner) = v
            .as_object()
            .and_then(|o| o.iter().next())
            .expect("one key");
        let op = match kind.as_str() {
            "identity" | "freeze" => inner.as_object().and_then(|o| o.keys().next().cloned()),
            "propose" => inner["action"]
                .as_object()
                .and_then(|o| o.keys().next().cloned()),
            _ => None,
        };
        kinds.insert(op.map_or_else(|| kind.clone(), |op| format!("{kind}: {op}")));
    }
    let every: std::collections::BTreeSet<String> = [
        "transfer",
        "issue",
        "redeem",
        "vote",
        "identity: register",
        "identity: update",
        "identity: revoke",
        "identity: bind",
        "identity: unbind",
        "freeze: freeze",
        "freeze: unfreeze",
        "freeze: freeze_asset",
        "freeze: unfreeze_asset",
        "propose: set_rules",
        "propose: update_sanctions",
        "propose: set_role",
        "propose: remove_role",
        "propose: set_validators",
        "propose: set_parameter",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(
        kinds, every,
        "the documented payloads and the payload kinds differ"
    );

    let typo = examples[0].replacen("\"memo\"", "\"memos\"", 1);
    assert_ne!(typo, examples[0], "the first example has a memo");
    let out = sign(&typo);
    assert!(!out.status.success(), "an unknown field is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("memos"));
}

/// `tally load` sends the demo accounts' payments to a running network and reports what became
/// final, read back from the node; a target that is not a base URL, or that serves another
/// network than the keys are for, is refused before anything is sent.
#[test]
fn a_load_pointed_at_a_running_network_becomes_final_and_is_reported() {
    let net = Network::start();
    let out = tally_ok(&[
        "--output",
        "json",
        "load",
        "--target",
        &net.api,
        "--net-dir",
        &net.path(""),
        "--rate",
        "200",
        "--duration",
        "3s",
    ]);
    let summary = json(out.trim());
    let accepted = summary["accepted"].as_u64().expect("accepted");
    assert!(accepted > 0, "{summary}");
    assert_eq!(summary["committed"].as_u64(), Some(accepted), "{summary}");
    assert_eq!(summary["applied"].as_u64(), Some(accepted), "{summary}");
    assert_eq!(summary["state_roots_agree"], true, "{summary}");
    assert!(summary["latency_ms"]["p50"].as_u64().is_some(), "{summary}");
    assert_eq!(summary["view_changes"].as_u64(), Some(0), "{summary}");

    // The sequence numbers are read from the network, so a second load follows the first.
    let again = json(
        tally_ok(&[
            "--output",
            "json",
            "load",
            "--target",
            &net.api,
            "--net-dir",
            &net.path(""),
            "--rate",
            "100",
            "--duration",
            "1s",
        ])
        .trim(),
    );
    assert!(again["accepted"].as_u64() > Some(0), "{again}");
    assert_eq!(again["committed"], again["accepted"], "{again}");

    let bad = tally(&[
        "load",
        "--target",
        "127.0.0.1:1",
        "--net-dir",
        &net.path(""),
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--target"));

    let other = tempfile::tempdir().expect("tempdir");
    tally_ok(&[
        "testnet",
        "init",
        "--validators",
        "1",
        "--accounts",
        "2",
        "--chain-id",
        "another-network",
        "--out",
        other.path().to_str().expect("utf-8 path"),
    ]);
    let wrong = tally(&[
        "load",
        "--target",
        &net.api,
        "--net-dir",
        other.path().to_str().expect("utf-8 path"),
    ]);
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(stderr.contains("another-network"), "{stderr}");
}
