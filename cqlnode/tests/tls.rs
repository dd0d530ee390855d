//! The TLS listener (feature `tls`): CQL over TLS works, plain TCP to a TLS node gets no CQL
//! answer, and a client that does not trust the node's CA fails the handshake.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;

use openssl::ssl::{Ssl, SslConnector, SslMethod};
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;
use vaxcamp_cqlnode::tls::TestCa;
use vaxcamp_cqlnode::{CqlNode, NodeConfig};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// An `OPTIONS` frame, protocol v4, stream 1.
const OPTIONS: [u8; 9] = [0x04, 0, 0, 1, 0x05, 0, 0, 0, 0];
const SUPPORTED: u8 = 0x06;

async fn tls_node(ca: &TestCa) -> CqlNode {
    let identity = ca.issue_server(&[LOCALHOST]).unwrap();
    CqlNode::start(NodeConfig::default().with_tls(identity))
        .await
        .unwrap()
}

/// A TLS client trusting only `ca`, verifying the node's IP address as the driver does.
async fn tls_client(ca: &TestCa, node: &CqlNode) -> Result<SslStream<TcpStream>, String> {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    let mut store = X509StoreBuilder::new().unwrap();
    store
        .add_cert(X509::from_pem(&ca.cert_pem().unwrap()).unwrap())
        .unwrap();
    builder.set_cert_store(store.build());
    let connector = builder.build();
    let mut ssl = Ssl::new(connector.context()).unwrap();
    ssl.set_connect_state();
    ssl.param_mut().set_ip(node.addr().ip()).unwrap();
    let tcp = TcpStream::connect(node.addr()).await.unwrap();
    let mut stream = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

#[tokio::test]
async fn cql_over_tls_is_answered() {
    let ca = TestCa::new("cqlnode test CA").unwrap();
    let node = tls_node(&ca).await;
    let mut stream = tls_client(&ca, &node).await.unwrap();
    stream.write_all(&OPTIONS).await.unwrap();
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x84, "a v4 response");
    assert_eq!(head[4], SUPPORTED, "OPTIONS answered with SUPPORTED");
    assert_eq!(node.accepted_connections(), 1);
    assert_eq!(node.failed_tls_handshakes(), 0);
    node.shutdown().await;
}

#[tokio::test]
async fn plain_cql_to_a_tls_node_gets_no_answer() {
    let ca = TestCa::new("cqlnode test CA").unwrap();
    let node = tls_node(&ca).await;
    let mut tcp = TcpStream::connect(node.addr()).await.unwrap();
    tcp.write_all(&OPTIONS).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        tcp.read_to_end(&mut answer),
    )
    .await
    .expect("the node closes a plain-TCP connection, it does not leave it hanging");
    // Closed (possibly after a TLS alert), never a CQL frame.
    assert!(
        read.is_err() || answer.first() != Some(&0x84),
        "a plain CQL frame was answered over the TLS port: {answer:?}"
    );
    assert_eq!(node.failed_tls_handshakes(), 1);
    assert_eq!(
        node.accepted_connections(),
        0,
        "no CQL connection was opened"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails_the_handshake() {
    let ca = TestCa::new("cqlnode test CA").unwrap();
    let other = TestCa::new("some other CA").unwrap();
    let node = tls_node(&ca).await;
    let error = tls_client(&other, &node).await.unwrap_err();
    assert!(error.contains("certificate verify failed"), "{error}");
    node.shutdown().await;
}

#[tokio::test]
async fn a_certificate_for_another_address_fails_the_handshake() {
    let ca = TestCa::new("cqlnode test CA").unwrap();
    let identity = ca
        .issue_server(&[IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))])
        .unwrap();
    let node = CqlNode::start(NodeConfig::default().with_tls(identity))
        .await
        .unwrap();
    let error = tls_client(&ca, &node).await.unwrap_err();
    assert!(error.contains("certificate verify failed"), "{error}");
    node.shutdown().await;
}
