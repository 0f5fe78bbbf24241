//! `Endpoints::serve`: the three endpoints answer over a real socket, with the status codes
//! and content types Prometheus and orchestrators expect.
#![cfg(feature = "server")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use crossfold_core::{HealthCheck, HealthReport, HealthStatus};
use crossfold_monitoring::{Endpoints, HealthRegistry, METRICS_CONTENT_TYPE};
use metrics_exporter_prometheus::PrometheusBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request and returns the status code, the headers and the body.
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[derive(Clone)]
struct Store(HealthStatus);
impl HealthCheck for Store {
    async fn check_health(&self) -> HealthReport {
        HealthReport {
            status: self.0,
            message: Some("PostgreSQL did not answer".to_owned()),
            ..HealthReport::healthy("event_store")
        }
    }
}

#[tokio::test]
async fn metrics_and_health_are_served_over_http() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_counter!("crossfold_commands_total", "Commands executed.");
        metrics::counter!("crossfold_commands_total", "command" => "Open").increment(2);
    });
    let server = Endpoints::new(handle)
        .health(HealthRegistry::new().register("event_store", Store(HealthStatus::Unhealthy)))
        .serve("127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.local_addr();

    let (status, head, body) = request(addr, "GET", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        head.contains(&format!("content-type: {METRICS_CONTENT_TYPE}")),
        "{head}"
    );
    assert!(
        body.contains("# HELP crossfold_commands_total Commands executed."),
        "{body}"
    );
    assert!(
        body.contains(r#"crossfold_commands_total{command="Open"} 2"#),
        "{body}"
    );

    let (status, _, body) = request(addr, "GET", "/health/live").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"healthy"}"#));

    let (status, head, body) = request(addr, "GET", "/health/ready").await;
    assert_eq!(status, 503);
    assert!(head.contains("content-type: application/json"), "{head}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["status"], "unhealthy");
    assert_eq!(ready["components"][0]["component"], "event_store");
    assert_eq!(
        ready["components"][0]["message"],
        "PostgreSQL did not answer"
    );

    let (status, _, body) = request(addr, "HEAD", "/metrics").await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, head, _) = request(addr, "POST", "/metrics").await;
    assert_eq!(status, 405);
    assert!(head.contains("allow: get, head"), "{head}");
    let (status, _, body) = request(addr, "GET", "/").await;
    assert_eq!(status, 404);
    assert!(body.contains("/health/ready"), "{body}");

    server.shutdown().await;
    let refused = TcpStream::connect(addr).await;
    assert_eq!(
        refused.map(|_| ()).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::ConnectionRefused)
    );
}
