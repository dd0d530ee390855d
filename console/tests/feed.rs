//! The feed against a scripted server on 127.0.0.1:0: a snapshot then a dropped stream, a
//! refused token, a connection that goes silent, an error event, and a recovery. The feed reports each, backs
//! off, and keeps reconnecting.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use vaxcamp_console::app::Event;
use vaxcamp_console::feed::{FeedConfig, FeedEvent, follow};

/// Reads a request head and returns it, lower-cased.
async fn request_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap().to_lowercase()
}

const EVENT_STREAM: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n";

fn snapshot(doses: u64) -> String {
    format!(
        ": keep-alive\n\nevent: snapshot\ndata: {{\"generated_at\": 10, \"doses\": {{\"today\": {doses}}}}}\n\n"
    )
}

#[tokio::test]
async fn feed_reports_drops_and_refusals_and_reconnects_with_backoff() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let script = tokio::spawn(async move {
        // 1: a snapshot, then the server closes the stream.
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = request_head(&mut stream).await;
        assert!(head.starts_with("get /v1/live/stream "), "{head}");
        assert!(head.contains("accept: text/event-stream"), "{head}");
        assert!(
            head.contains("authorization: bearer observer-token"),
            "{head}"
        );
        stream.write_all(EVENT_STREAM).await.unwrap();
        stream.write_all(snapshot(7).as_bytes()).await.unwrap();
        drop(stream);
        // 2: the token is refused.
        let (mut stream, _) = listener.accept().await.unwrap();
        request_head(&mut stream).await;
        let body = r#"{"error":"forbidden","message":"a site token cannot do this"}"#;
        stream
            .write_all(
                format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        drop(stream);
        // 3: the stream opens and then says nothing.
        let (mut silent, _) = listener.accept().await.unwrap();
        request_head(&mut silent).await;
        silent.write_all(EVENT_STREAM).await.unwrap();
        // 4: connected, the server reports an error instead of a snapshot, then recovers.
        let (mut stream, _) = listener.accept().await.unwrap();
        request_head(&mut stream).await;
        stream.write_all(EVENT_STREAM).await.unwrap();
        stream
            .write_all(b"event: error\ndata: could not build a snapshot\n\n")
            .await
            .unwrap();
        stream.write_all(snapshot(9).as_bytes()).await.unwrap();
        // Keep both open until the feed is done with them.
        (silent, stream)
    });

    let mut config = FeedConfig::new(server, "observer-token");
    config.stale_after = Duration::from_millis(300);
    config.first_backoff = Duration::from_millis(10);
    config.max_backoff = Duration::from_millis(40);
    let (sender, mut events) = mpsc::channel(16);
    let feed = tokio::spawn(follow(config, sender));

    let mut seen = Vec::new();
    let collected = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(Event::Feed(event)) = events.recv().await {
            let done = matches!(&event, FeedEvent::Snapshot(s) if s.doses.today == 9);
            seen.push(event);
            if done {
                break;
            }
        }
    })
    .await;
    assert!(collected.is_ok(), "the feed recovered: {seen:#?}");
    let summary: Vec<String> = seen
        .iter()
        .map(|event| match event {
            FeedEvent::Connecting { attempt } => format!("connecting {attempt}"),
            FeedEvent::Snapshot(s) => format!("snapshot {}", s.doses.today),
            FeedEvent::Lost {
                error, failures, ..
            } => format!("lost {failures}: {error}"),
            FeedEvent::ServerError(message) => format!("server error: {message}"),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "connecting 1",
            "snapshot 7",
            "lost 1: the server closed the stream",
            "connecting 2",
            "lost 2: the server answered 403 Forbidden: a site token cannot do this",
            "connecting 3",
            "lost 3: no data for 0.3 s; the connection seems dead",
            "connecting 4",
            "server error: could not build a snapshot",
            "snapshot 9",
        ]
    );
    let _keep_open = script.await.unwrap();
    // The feed stops once nobody listens.
    drop(events);
    tokio::time::timeout(Duration::from_secs(10), feed)
        .await
        .expect("the feed ends when the console closes")
        .unwrap();
}
