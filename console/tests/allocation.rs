//! The allocation request against a scripted server on 127.0.0.1:0: a proposal, the server's
//! refusals (404, 409, 503 with `{"error", "message"}`), an old server without the endpoint, a
//! server that never answers, and one that is not there. Each refusal reaches the console as
//! the server's message.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use vaxcamp_console::allocation::{AllocationClient, AllocationQuery, Level, fetch};
use vaxcamp_console::app::Event;

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

async fn answer(stream: &mut TcpStream, status: &str, extra: &str, body: &str) {
    stream
        .write_all(
            format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
}

/// What `GET /v1/allocation` answers, as the server writes it.
const PROPOSAL: &str = r#"{"analytics_backend":"embedded","generated_at":1893571205,"plan":{
 "request":{"product":"COMIRNATY","shipment_doses":5000,"unit_doses":10,"window_days":7,"horizon_days":14,"level":"district"},
 "lines":[
  {"area":"01/001","name":"001","site_count":2,"daily_rate":3000.0,"stock_on_hand":40000,"owed_doses":1200,
   "remaining_registrations":30000,"planned_doses":42000,"need_doses":2000,"allocated_doses":2000,
   "days_of_supply_before":13.333,"days_of_supply_after":14.0},
  {"area":"01/005","name":"005","site_count":1,"daily_rate":0.0,"stock_on_hand":0,"owed_doses":0,
   "remaining_registrations":0,"planned_doses":0,"need_doses":0,"allocated_doses":0,
   "days_of_supply_before":null,"days_of_supply_after":null}],
 "need_doses":2000,"allocated_doses":2000,"held_back_doses":3000,"unmet_need_doses":0,
 "fill_level_days":null,"unplaced_registrations":0,
 "notes":["the shipment covers every need for 14 days; 3000 doses held back"]}}"#;

fn query() -> AllocationQuery {
    AllocationQuery {
        product: "COMIRNATY".into(),
        quantity: 5_000,
        level: Level::District,
    }
}

#[tokio::test]
async fn allocation_request_brings_the_proposal_or_the_servers_message() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let script = tokio::spawn(async move {
        // 1: the proposal.
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = request_head(&mut stream).await;
        assert!(
            head.starts_with(
                "get /v1/allocation?product=comirnaty&quantity=5000&level=district http/1.1\r\n"
            ),
            "{head}"
        );
        assert!(
            head.contains("authorization: bearer observer-token"),
            "{head}"
        );
        answer(&mut stream, "200 OK", "", PROPOSAL).await;
        // 2-4: the planner's refusals.
        for (status, extra, body) in [
            (
                "404 Not Found",
                "",
                r#"{"error":"unknown_product","message":"no product COMIRNATY in the catalogue; GET /v1/stats lists the lots and products"}"#,
            ),
            (
                "409 Conflict",
                "",
                r#"{"error":"no_sites","message":"there are no vaccination sites yet; add sites before planning a shipment"}"#,
            ),
            (
                "503 Service Unavailable",
                "retry-after: 5\r\n",
                r#"{"error":"analytics_unavailable","message":"the analytics backend could not answer (timed out); doses are still being recorded, try again shortly"}"#,
            ),
            // 5: a server from before the planner.
            (
                "404 Not Found",
                "",
                r#"{"error":"no_such_route","message":"no such endpoint; see /openapi.json for the API"}"#,
            ),
        ] {
            let (mut stream, _) = listener.accept().await.unwrap();
            request_head(&mut stream).await;
            answer(&mut stream, status, extra, body).await;
        }
        // 6: a server that reads the request and says nothing.
        let (mut silent, _) = listener.accept().await.unwrap();
        request_head(&mut silent).await;
        // 7: the proposal again, for the console's event.
        let (mut stream, _) = listener.accept().await.unwrap();
        request_head(&mut stream).await;
        answer(&mut stream, "200 OK", "", PROPOSAL).await;
        silent
    });

    let client = AllocationClient::new(server, "observer-token")
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let proposal = client.propose(&query()).await.unwrap();
    assert_eq!(proposal.analytics_backend, "embedded");
    assert_eq!(proposal.plan.request.level, Level::District);
    assert_eq!(proposal.plan.request.horizon_days, 14);
    assert_eq!(proposal.plan.lines.len(), 2);
    assert_eq!(proposal.plan.lines[0].allocated_doses, 2_000);
    assert_eq!(proposal.plan.lines[1].days_of_supply_after, None);
    assert_eq!(proposal.plan.held_back_doses, 3_000);
    assert_eq!(proposal.plan.notes.len(), 1);

    let mut refusals = Vec::new();
    for _ in 0..5 {
        refusals.push(client.propose(&query()).await.unwrap_err());
    }
    assert_eq!(
        refusals,
        [
            "no product COMIRNATY in the catalogue; GET /v1/stats lists the lots and products",
            "there are no vaccination sites yet; add sites before planning a shipment",
            "the analytics backend could not answer (timed out); doses are still being recorded, try again shortly",
            "this server has no allocation planner (it is older than the console)",
            "the server did not answer within 0.5 s; try again",
        ]
    );

    // The console's way: in the background, answering with the request's id.
    let (sender, mut events) = mpsc::channel(4);
    tokio::spawn(fetch(client, 7, query(), sender));
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    match event {
        Event::Allocation { id, answer } => {
            assert_eq!(id, 7);
            assert_eq!(answer.unwrap().plan.allocated_doses, 2_000);
        }
        other => panic!("expected the allocation answer, got {other:?}"),
    }
    drop(script.await.unwrap());
}

#[tokio::test]
async fn allocation_request_to_a_server_that_is_not_there() {
    // A port that was just free: nothing listens on it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let client = AllocationClient::new(server, "t").unwrap();
    let error = client.propose(&query()).await.unwrap_err();
    assert!(error.starts_with("cannot connect"), "{error}");
}
