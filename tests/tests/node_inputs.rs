//! What a node receives from `kanmon up` (the real binary), seen from the node itself through
//! the edge: the server key it enforces on `/ws`, runtime variables, config and secret config
//! (`GET /kanmon/received`, secret values masked), each taking effect only through the
//! rolling reboot its operation triggers; and a key rotation as a rolling reboot.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use kanmon_control::cli::Client;
use kanmon_tests::{
    client_config, http_get, server_key, tls_connect,
    up_process::{Output, StateDir, UpOpts, UpProcess, DEMO_HOST},
    ws_with_key,
};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

async fn wait_op(client: &Client, id: u64) -> Value {
    for _ in 0..600 {
        let op = client.get(&format!("/v1/operations/{id}")).await.unwrap();
        if op["status"] == "completed" || op["status"] == "failed" {
            return op;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("operation {id} did not finish");
}

/// `GET /kanmon/received` of whichever node the edge picks.
async fn received(up: &UpProcess) -> Value {
    let ca = up.state.join("certs").join("ca.crt");
    let tls = tls_connect(up.tls, DEMO_HOST, client_config(&ca))
        .await
        .unwrap();
    let (status, body) = http_get(tls, DEMO_HOST, "/kanmon/received").await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A WebSocket through the edge with `key`; `Ok` when `whoami` is answered, else the HTTP
/// status the node refused the upgrade with.
async fn ws_status(up: &UpProcess, key: &str) -> Result<String, u16> {
    let ca = up.state.join("certs").join("ca.crt");
    let tls = tls_connect(up.tls, DEMO_HOST, client_config(&ca))
        .await
        .unwrap();
    match ws_with_key(tls, DEMO_HOST, key).await {
        Ok(mut ws) => {
            ws.send(Message::text("whoami")).await.unwrap();
            let reply = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
            let Ok(Some(Ok(Message::Text(t)))) = reply else {
                panic!("no whoami answer: {reply:?}");
            };
            Ok(t.to_string())
        }
        Err(WsError::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("WebSocket failed otherwise: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_enforce_the_server_key_and_report_what_they_received() {
    let state = StateDir::new();
    let mut up = UpProcess::start(
        state.path(),
        &UpOpts {
            database: false,
            output: Output::File,
            extra_args: Vec::new(),
        },
    );
    up.served().await;
    let client = Client::new(&format!("http://{}", up.api), up.token());
    let first = wait_op(&client, 1).await;
    assert_eq!(first["status"], "completed", "{first}");

    // The server key: a wrong one is refused by the node, the right one served.
    let key = server_key(&client, "demo").await;
    assert_eq!(ws_status(&up, "not-the-key").await, Err(401));
    let node = ws_status(&up, &key)
        .await
        .expect("served with the right key");
    assert!(node.starts_with("demo-"), "{node}");

    // What the nodes have now: the keys as Nakama's config, masked.
    let before = received(&up).await;
    let config = &before["received"]["config"];
    assert_eq!(
        config["KANMON_CONFIG_SOCKET_SERVER_KEY"],
        format!("<secret: {} bytes>", key.len()),
        "{before}"
    );
    assert!(config.get("KANMON_CONFIG_MODE").is_none(), "{before}");

    // A config change with a secret: before the rollout ends, the old nodes report the old
    // config; afterwards every node the new one, secret masked.
    let op = client
        .post(
            "/v1/deployments/demo/operations",
            &json!({ "kind": "set-config", "config": { "mode": "pvp" },
                     "secret_config": { "db_password": "hunter2" } }),
        )
        .await
        .unwrap();
    let during = received(&up).await;
    assert!(
        during["received"]["config"]
            .get("KANMON_CONFIG_MODE")
            .is_none(),
        "a node reported the change before it was rebooted: {during}"
    );
    let done = wait_op(&client, op["id"].as_u64().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let vars = client
        .post(
            "/v1/deployments/demo/operations",
            &json!({ "kind": "set-vars", "vars": { "level": "7" } }),
        )
        .await
        .unwrap();
    let done = wait_op(&client, vars["id"].as_u64().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let now = received(&up).await;
        let r = &now["received"];
        assert_eq!(r["config"]["KANMON_CONFIG_MODE"], "pvp", "{now}");
        assert_eq!(
            r["config"]["KANMON_CONFIG_DB_PASSWORD"],
            "<secret: 7 bytes>"
        );
        assert_eq!(r["vars"]["KANMON_VAR_LEVEL"], "7", "{now}");
        assert!(!now.to_string().contains("hunter2"), "{now}");
        nodes.insert(now["node"].as_str().unwrap().to_string());
        if nodes.len() == 2 {
            break;
        }
    }
    assert_eq!(nodes.len(), 2, "both nodes answered: {nodes:?}");

    // Rotating the server key is a rolling reboot; the new key is never in the operation.
    let op = client
        .post(
            "/v1/deployments/demo/operations",
            &json!({ "kind": "rotate-key", "key": "server", "value": "chosen-by-client" }),
        )
        .await
        .unwrap();
    assert!(op.get("value").is_none(), "{op}");
    let done = wait_op(&client, op["id"].as_u64().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let new_key = server_key(&client, "demo").await;
    assert_ne!(new_key, key);
    assert_ne!(new_key, "chosen-by-client");
    assert_eq!(
        ws_status(&up, &key).await,
        Err(401),
        "the old key is refused"
    );
    ws_status(&up, &new_key)
        .await
        .expect("the new key is served");
    let audit = client
        .get("/v1/deployments/demo/audit?limit=100")
        .await
        .unwrap();
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "operations.rotate-key" && e["outcome"] == "allowed"),
        "{audit}"
    );

    // Keys appear in no log: neither kanmon up's nor the nodes'.
    let mut logs = up.log();
    for entry in std::fs::read_dir(up.state.join("logs/demo")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            logs.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    for secret in [&key, &new_key, &"hunter2".to_string()] {
        assert!(!logs.contains(secret.as_str()), "a secret is in a log");
    }
}
