//! Platform catalogs from the configuration file, and the support team's interventions (one
//! allowed downgrade, on-request zones per organization), through the API and the CLI of a
//! real `kanmon serve`.

mod common;

use std::process::{Command, Output, Stdio};

use common::Server;
use serde_json::json;

fn kanmon(s: &Server, token_file: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kanmon"))
        .args(args)
        .env("KANMON_SERVER", &s.url)
        .env("KANMON_TOKEN_FILE", token_file)
        .env_remove("KANMON_TOKEN")
        .output()
        .expect("run kanmon")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn audit_actions(s: &Server) -> Vec<(String, String, String)> {
    let (status, v) = s.get("/v1/audit?limit=1000", &s.admin).await;
    assert_eq!(status, 200, "{v}");
    v["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let f = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (f("action"), f("outcome"), f("detail"))
        })
        .collect()
}

#[tokio::test]
async fn the_version_and_zone_catalogs_come_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kanmon.toml");
    std::fs::write(
        &config,
        r#"
versions = ["4.0.0", "4.1.0", "4.2.0", "4.3.0", "4.4.0", "4.5.0", "4.5.1-r2"]
zones = [{ name = "eu-north1" }, { name = "ap-south-1", on_request = true }]
"#,
    )
    .unwrap();
    let db = dir.path().join("k.db");
    let s = Server::start(&db, &["--config", config.to_str().unwrap()]);
    let token_file = format!("{}.admin-token", db.display());

    let out = kanmon(&s, &token_file, &["versions"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("4.5.1-r2  supported    latest"), "{text}");
    assert!(text.contains("4.1.0     supported"), "{text}");
    assert!(text.contains("4.0.0     unsupported"), "{text}");
    assert!(!text.contains("3.37"), "{text}");
    let out = kanmon(&s, &token_file, &["zones"]);
    let text = stdout(&out);
    assert!(text.contains("eu-north1   offered"), "{text}");
    assert!(text.contains("ap-south-1  on request"), "{text}");
    assert!(!text.contains("us-east1"), "{text}");

    // Creation follows the configured catalogs.
    let create = |zone: &str, version: &str| json!({ "instance": "alpha", "zone": zone, "type": "development", "version": version });
    let (status, v) = s
        .post("/v1/deployments", &s.admin, create("us-east1", "4.5.0"))
        .await;
    assert_eq!(status, 422, "{v}");
    let (status, v) = s
        .post("/v1/deployments", &s.admin, create("eu-north1", "3.37.0"))
        .await;
    assert_eq!(status, 422, "{v}");
    let (status, v) = s
        .post("/v1/deployments", &s.admin, create("eu-north1", "4.5.0"))
        .await;
    assert_eq!(status, 201, "{v}");
}

#[test]
fn an_unknown_config_key_stops_the_server_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kanmon.toml");
    std::fs::write(&config, "versions = [\"3.37.0\"]\n[zone]\nname = \"x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kanmon"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--db")
        .arg(dir.path().join("k.db"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("unknown field `zone`"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[tokio::test]
async fn a_platform_admin_allows_one_downgrade() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let s = Server::start(&db, &["--grace", "1s"]);
    let token_file = format!("{}.admin-token", db.display());
    s.create("alpha", "production", 2).await;
    let deploy = |version: &str| json!({ "kind": "deploy", "version": version });
    let (status, op) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            deploy("3.37.0"),
        )
        .await;
    assert_eq!(status, 202, "{op}");
    assert_eq!(
        s.wait_op(op["id"].as_u64().unwrap()).await["status"],
        "completed"
    );
    let (status, body) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            deploy("3.36.0"),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    // An org admin with every deployment permission is not the support team.
    let owner = s
        .user(
            "owner",
            &[(
                json!({ "level": "organization", "org": "acme" }),
                &["view", "edit", "deploy", "scale"],
            )],
        )
        .await;
    let owner_file = dir.path().join("owner-token");
    std::fs::write(&owner_file, &owner).unwrap();
    let out = kanmon(
        &s,
        owner_file.to_str().unwrap(),
        &[
            "deployments",
            "allow-downgrade",
            "alpha",
            "--version",
            "3.36.0",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("missing permission: admin"),
        "{}",
        stderr(&out)
    );
    // Not a downgrade: nothing to allow.
    let (status, body) = s
        .post(
            "/v1/deployments/alpha/downgrade-allowance",
            &s.admin,
            json!({ "version": "3.37.1-r1" }),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    let out = kanmon(
        &s,
        &token_file,
        &[
            "deployments",
            "allow-downgrade",
            "alpha",
            "--version",
            "3.36.0",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("downgrade 3.37.0 to 3.36.0"),
        "{}",
        stdout(&out)
    );
    let (_, d) = s.get("/v1/deployments/alpha", &owner).await;
    assert_eq!(d["downgrade_allowance"]["version"], "3.36.0", "{d}");
    assert_eq!(d["downgrade_allowance"]["by"], "admin", "{d}");
    // Only the allowed version, and only by someone who may deploy.
    let (status, body) = s
        .post(
            "/v1/deployments/alpha/operations",
            &s.admin,
            deploy("3.35.0"),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, op) = s
        .post("/v1/deployments/alpha/operations", &owner, deploy("3.36.0"))
        .await;
    assert_eq!(status, 202, "{op}");
    assert_eq!(
        s.wait_op(op["id"].as_u64().unwrap()).await["status"],
        "completed"
    );
    let (_, d) = s.get("/v1/deployments/alpha", &s.admin).await;
    assert_eq!(d["version"], "3.36.0");
    assert!(d.get("downgrade_allowance").is_none(), "{d}");

    // Used up: up again, then the same downgrade is refused.
    let (_, op) = s
        .post("/v1/deployments/alpha/operations", &owner, deploy("3.37.0"))
        .await;
    assert_eq!(
        s.wait_op(op["id"].as_u64().unwrap()).await["status"],
        "completed"
    );
    let (status, body) = s
        .post("/v1/deployments/alpha/operations", &owner, deploy("3.36.0"))
        .await;
    assert_eq!(status, 409, "{body}");

    let audit = audit_actions(&s).await;
    let allowances: Vec<_> = audit
        .iter()
        .filter(|(a, _, _)| a == "deployments.allow_downgrade")
        .collect();
    assert_eq!(allowances.len(), 3, "{audit:?}");
    assert!(
        allowances
            .iter()
            .any(|(_, o, d)| o == "allowed"
                && d.contains("one deploy may downgrade 3.37.0 to 3.36.0"))
    );
    assert!(allowances.iter().any(|(_, o, _)| o == "denied"));
}

#[tokio::test]
async fn an_on_request_zone_opens_for_one_organization_when_an_admin_enables_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let s = Server::start(&db, &["--grace", "1s"]);
    let token_file = format!("{}.admin-token", db.display());
    let create = |instance: &str, org: &str| {
        json!({
            "instance": instance, "zone": "us-east-1", "type": "development",
            "version": "3.37.0", "org": org, "title": "rpg",
        })
    };
    let (status, body) = s
        .post("/v1/deployments", &s.admin, create("alpha", "acme"))
        .await;
    assert_eq!(status, 422, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(msg.contains("available on request"), "{msg}");
    assert!(
        msg.contains("kanmon zones enable us-east-1 --org acme"),
        "{msg}"
    );
    let out = kanmon(&s, &token_file, &["zones", "--org", "acme"]);
    assert!(
        stdout(&out).contains("us-east-1        on request (ask a platform admin)"),
        "{}",
        stdout(&out)
    );

    let owner = s
        .user(
            "owner",
            &[(
                json!({ "level": "organization", "org": "acme" }),
                &["view", "edit", "deploy"],
            )],
        )
        .await;
    let owner_file = dir.path().join("owner-token");
    std::fs::write(&owner_file, &owner).unwrap();
    let out = kanmon(
        &s,
        owner_file.to_str().unwrap(),
        &["zones", "enable", "us-east-1", "--org", "acme"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("missing permission: admin"),
        "{}",
        stderr(&out)
    );
    // Only on-request zones are enabled; unknown ones are refused.
    for zone in ["us-east1", "mars-1"] {
        let out = kanmon(&s, &token_file, &["zones", "enable", zone, "--org", "acme"]);
        assert!(!out.status.success(), "{zone}");
    }

    let out = kanmon(
        &s,
        &token_file,
        &["zones", "enable", "us-east-1", "--org", "acme"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("zone us-east-1 enabled for org acme"));
    let out = kanmon(&s, &token_file, &["zones", "--org", "acme"]);
    assert!(
        stdout(&out).contains("us-east-1        on request, enabled by admin"),
        "{}",
        stdout(&out)
    );
    let (status, body) = s
        .post("/v1/deployments", &owner, create("alpha", "acme"))
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["deployment"]["zone"], "us-east-1");
    // Another organization still has to ask.
    let (status, body) = s
        .post("/v1/deployments", &s.admin, create("beta", "other"))
        .await;
    assert_eq!(status, 422, "{body}");

    // Taken back: new deployments are refused again, the existing one stays.
    let out = kanmon(
        &s,
        &token_file,
        &["zones", "disable", "us-east-1", "--org", "acme"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (status, _) = s
        .post("/v1/deployments", &s.admin, create("gamma", "acme"))
        .await;
    assert_eq!(status, 422);
    let (status, _) = s.get("/v1/deployments/alpha", &s.admin).await;
    assert_eq!(status, 200);

    let audit = audit_actions(&s).await;
    let has = |action: &str, outcome: &str, detail: &str| {
        audit
            .iter()
            .any(|(a, o, d)| a == action && o == outcome && d.contains(detail))
    };
    assert!(
        has(
            "zones.enable",
            "allowed",
            "zone us-east-1 enabled for org acme"
        ),
        "{audit:?}"
    );
    assert!(has("zones.enable", "denied", ""), "{audit:?}");
    assert!(
        has(
            "zones.disable",
            "allowed",
            "zone us-east-1 disabled for org acme"
        ),
        "{audit:?}"
    );
}
