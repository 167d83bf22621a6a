//! The console allow-list route (`/v1/deployments/{instance}/console`) over HTTP: what it
//! answers, who may read and change it, and what it refuses. Every answer is also checked
//! against the OpenAPI document by `Server::call`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::Server;

async fn put(s: &Server, path: &str, token: &str, body: Value) -> (u16, Value) {
    s.call(Method::PUT, path, Some(token), Some(body)).await
}

#[tokio::test]
async fn the_console_allow_list_is_closed_by_default_and_changed_with_edit() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("k.db"), &[]);
    s.create("alpha", "development", 1).await;
    let path = "/v1/deployments/alpha/console";

    // Closed until someone opens it on purpose.
    let (status, v) = s.get(path, &s.admin).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["open"].clone(), v["allow"].clone()),
        (json!(false), json!([]))
    );
    assert!(v["hostname"].as_str().unwrap().starts_with("alpha"), "{v}");

    // Host bits cleared, a bare address is one host, duplicates dropped.
    let (status, v) = put(
        &s,
        path,
        &s.admin,
        json!({ "allow": ["10.1.2.3/8", "192.0.2.7", "10.0.0.0/8"] }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["allow"], json!(["10.0.0.0/8", "192.0.2.7/32"]));
    assert_eq!(v["open"], true);

    // Refused: a wrong entry (named), too many, an unknown field; the list stays.
    let (status, v) = put(&s, path, &s.admin, json!({ "allow": ["nonsense"] })).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("allow[0]"), "{v}");
    let many = vec!["10.0.0.1"; 65];
    let (status, v) = put(&s, path, &s.admin, json!({ "allow": many })).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = put(&s, path, &s.admin, json!({ "allow": [], "x": 1 })).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(
        s.get(path, &s.admin).await.1["allow"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // `view` reads it, only `edit` changes it; an unknown deployment is a 404.
    let viewer = s
        .user(
            "viewer",
            &[(
                json!({ "level": "deployment", "instance": "alpha" }),
                &["view"],
            )],
        )
        .await;
    let (status, v) = s.get(path, &viewer).await;
    assert_eq!((status, v["open"].clone()), (200, json!(true)), "{v}");
    let (status, v) = put(&s, path, &viewer, json!({ "allow": [] })).await;
    assert_eq!(
        (status, v["missing_permission"].as_str()),
        (403, Some("edit"))
    );
    let stranger = s.user("stranger", &[]).await;
    let (status, v) = s.get(path, &stranger).await;
    assert_eq!(
        (status, v["missing_permission"].as_str()),
        (403, Some("view"))
    );
    let (status, _) = s.get("/v1/deployments/nope/console", &s.admin).await;
    assert_eq!(status, 404);

    // An empty list closes it again, and the change is audited with the list.
    let (status, v) = put(&s, path, &s.admin, json!({ "allow": [] })).await;
    assert_eq!((status, v["open"].clone()), (200, json!(false)), "{v}");
    let (_, audit) = s.get("/v1/deployments/alpha/audit", &s.admin).await;
    let details: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "console.allow" && e["outcome"] == "allowed")
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("10.0.0.0/8, 192.0.2.7/32"))
            && details.iter().any(|d| d.contains("console closed")),
        "{audit}"
    );
    s.kill();
}
