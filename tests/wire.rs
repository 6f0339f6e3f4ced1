//! The agent on the wire: raw HTTP against the built binary, including
//! requests no SDK would send. Every bad request gets a clear 4xx (or a
//! closed connection) and the agent keeps serving.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Agent, get, raw, read_reply, request, token};

const CREDS: &str = "/latest/meta-data/iam/security-credentials/imds-agent-demo";

#[test]
fn ec2_headers_and_content_types() {
    let agent = Agent::dev(&[]);
    let listing = get(agent.addr, "/latest/meta-data/", &[]);
    assert_eq!(listing.status, 200);
    assert_eq!(listing.header("server"), Some("EC2ws"));
    assert_eq!(listing.header("content-type"), Some("text/plain"));
    assert!(
        listing
            .header("last-modified")
            .is_some_and(|v| v.ends_with(" GMT"))
    );
    assert!(
        !listing.text().ends_with('\n'),
        "listings have no final newline"
    );
    assert!(listing.text().lines().any(|l| l == "iam/"));

    let missing = get(agent.addr, "/latest/meta-data/nope", &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("server"), Some("EC2ws"));
    assert_eq!(missing.header("content-type"), Some("text/html"));
    assert!(missing.text().contains("<title>404 - Not Found</title>"));

    let creds = get(agent.addr, CREDS, &[]);
    assert_eq!(
        creds.header("content-type"),
        Some("text/plain"),
        "EC2 serves JSON as text/plain"
    );
    let doc: serde_json::Value = serde_json::from_slice(&creds.body).unwrap();
    assert_eq!(doc["Code"], "Success");
    assert_eq!(doc["Type"], "AWS-HMAC");
    for field in ["LastUpdated", "Expiration"] {
        let t = doc[field].as_str().unwrap();
        assert_eq!(t.len(), 20, "{field} {t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{field} {t}");
    }
}

#[test]
fn token_flow_and_ttl_headers() {
    let agent = Agent::dev(&["--http-tokens", "required"]);
    let put = raw(
        agent.addr,
        request(
            "PUT",
            "/latest/api/token",
            &[("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
        )
        .as_bytes(),
    );
    assert_eq!(put.status, 200);
    assert_eq!(
        put.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    assert_eq!(put.header("content-type"), Some("text/plain"));
    let token = put.text();

    let without = get(agent.addr, "/latest/meta-data/instance-id", &[]);
    assert_eq!(without.status, 401);
    let with = get(
        agent.addr,
        "/latest/meta-data/instance-id",
        &[("X-AWS-EC2-METADATA-TOKEN", &token)],
    );
    assert_eq!(with.status, 200, "header names are case-insensitive");
    let left: u32 = with
        .header("x-aws-ec2-metadata-token-ttl-seconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!((21_590..=21_600).contains(&left), "{left}");
    let forged = format!("{}A", &token[..token.len() - 1]);
    assert_eq!(
        get(
            agent.addr,
            "/latest/meta-data/instance-id",
            &[("x-aws-ec2-metadata-token", &forged)]
        )
        .status,
        401
    );
}

#[test]
fn bad_token_requests() {
    let agent = Agent::dev(&[]);
    let put = |headers: &[(&str, &str)]| {
        raw(
            agent.addr,
            request("PUT", "/latest/api/token", headers).as_bytes(),
        )
    };
    assert_eq!(put(&[]).status, 400);
    for ttl in [
        "0",
        "21601",
        "-5",
        "abc",
        "1.5",
        " ",
        "99999999999999999999",
    ] {
        assert_eq!(
            put(&[("x-aws-ec2-metadata-token-ttl-seconds", ttl)]).status,
            400,
            "ttl {ttl:?}"
        );
    }
    let proxied = put(&[
        ("x-aws-ec2-metadata-token-ttl-seconds", "60"),
        ("X-Forwarded-For", "10.0.0.9"),
    ]);
    assert_eq!(proxied.status, 403);
    let twice = raw(
        agent.addr,
        b"PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\nx-aws-ec2-metadata-token-ttl-seconds: 60\r\nx-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n",
    );
    assert_eq!(twice.status, 400);
    for method in ["GET", "POST", "DELETE", "PATCH"] {
        let reply = raw(
            agent.addr,
            request(
                method,
                "/latest/api/token",
                &[("x-aws-ec2-metadata-token-ttl-seconds", "60")],
            )
            .as_bytes(),
        );
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("OPTIONS, PUT"));
    }
    // A token minted for one address is refused from another: 127.0.0.2
    // is a different loopback address, so a different caller.
    let mine = token(agent.addr, 60);
    let from_other = {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket
            .bind(
                &"127.0.0.2:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        socket.connect(&agent.addr.into()).unwrap();
        let mut stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let req = request(
            "GET",
            "/latest/meta-data/instance-id",
            &[("x-aws-ec2-metadata-token", &mine)],
        );
        stream.write_all(req.as_bytes()).unwrap();
        read_reply(&mut stream, false).unwrap()
    };
    assert_eq!(from_other.status, 401);
}

#[test]
fn head_and_other_methods() {
    let agent = Agent::dev(&[]);
    let mut stream = TcpStream::connect(agent.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"HEAD /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\nGET /latest/meta-data/ami-launch-index HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
        .unwrap();
    let head = read_reply(&mut stream, true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some("19"),
        "HEAD gives the GET's length"
    );
    let next = read_reply(&mut stream, false).unwrap();
    assert_eq!(
        next.text(),
        "0",
        "no body was sent for HEAD, so the next response parses"
    );
    for method in ["POST", "DELETE", "PUT", "OPTIONS"] {
        let reply = raw(
            agent.addr,
            request(method, "/latest/meta-data/", &[]).as_bytes(),
        );
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
}

#[test]
fn path_tricks_get_404() {
    let agent = Agent::dev(&[]);
    for path in [
        "/latest/meta-data/iam/security-credentials/imds-agent-demo/extra",
        "/latest/meta-data/iam/security-credentials/other-role",
        "/latest/meta-data/placement/../iam/security-credentials/imds-agent-demo",
        "/latest/meta-data/%2e%2e/iam/info",
    ] {
        assert_eq!(get(agent.addr, path, &[]).status, 404, "{path}");
    }
    let collapsed = get(
        agent.addr,
        "//latest//meta-data//iam//security-credentials//imds-agent-demo",
        &[],
    );
    assert_eq!(collapsed.status, 200);
}

/// Garbage, oversize heads, lying lengths and slow clients: each gets a
/// 4xx or a closed connection, and the agent keeps answering.
#[test]
fn bad_requests_do_not_hurt_the_server() {
    let agent = Agent::dev(&[]);
    let garbage = raw(
        agent.addr,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    );
    assert_eq!(garbage.status, 400);
    let not_http = raw(agent.addr, b"HELLO WORLD\r\n\r\n");
    assert!(
        not_http.status >= 400 && not_http.status < 500,
        "{}",
        not_http.status
    );

    let huge_header = format!(
        "GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let reply = raw(agent.addr, huge_header.as_bytes());
    assert!(
        reply.status == 431 || reply.status == 400,
        "{}",
        reply.status
    );

    let many_headers: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = raw(
        agent.addr,
        format!("GET / HTTP/1.1\r\nHost: 169.254.169.254\r\n{many_headers}\r\n").as_bytes(),
    );
    assert!(
        reply.status == 431 || reply.status == 400,
        "{}",
        reply.status
    );

    // Content-Length promises 1000 bytes and sends 3: the answer comes at
    // once and the connection is closed rather than left waiting.
    let mut lying = TcpStream::connect(agent.addr).unwrap();
    lying
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    lying.write_all(b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 1000\r\n\r\nabc").unwrap();
    let started = Instant::now();
    let reply = read_reply(&mut lying, false).unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let _ = lying.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the connection was closed promptly"
    );

    // A client that never finishes its request head is cut off, not kept.
    let mut slow = TcpStream::connect(agent.addr).unwrap();
    slow.write_all(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n")
        .unwrap();

    let after = get(agent.addr, "/latest/meta-data/instance-id", &[]);
    assert_eq!(after.status, 200, "still serving");
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let agent = Agent::dev(&[]);
    let mut stream = TcpStream::connect(agent.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let token = token(agent.addr, 60);
    for _ in 0..100 {
        let req = format!(
            "GET {CREDS} HTTP/1.1\r\nHost: 169.254.169.254\r\nx-aws-ec2-metadata-token: {token}\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).unwrap();
        let reply = read_reply(&mut stream, false).unwrap();
        assert_eq!(reply.status, 200);
    }
}

#[test]
fn sigterm_stops_cleanly() {
    let agent = Agent::dev(&[]);
    assert_eq!(get(agent.addr, "/", &[]).status, 200);
    let status = agent.stop();
    assert!(status.success(), "{status:?}");
}

/// A web page that rebinds its DNS name to the agent's address sends its
/// own name in `Host`: refused, so it can read neither tokens nor
/// credentials.
#[test]
fn dns_rebinding_hosts_are_refused() {
    let agent = Agent::dev(&[]);
    for host in [
        "attacker.example",
        "attacker.example:1338",
        "169.254.169.254.nip.io",
    ] {
        let req = format!("GET {CREDS} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let reply = raw(agent.addr, req.as_bytes());
        assert_eq!(reply.status, 403, "{host}");
        assert!(!reply.text().contains("SecretAccessKey"));
        let put = format!(
            "PUT /latest/api/token HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nx-aws-ec2-metadata-token-ttl-seconds: 60\r\n\r\n"
        );
        assert_eq!(raw(agent.addr, put.as_bytes()).status, 403, "{host}");
    }
    let by_address = format!(
        "GET {CREDS} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        agent.addr
    );
    assert_eq!(raw(agent.addr, by_address.as_bytes()).status, 200);
    let by_name = format!(
        "GET {CREDS} HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
        agent.addr.port()
    );
    assert_eq!(raw(agent.addr, by_name.as_bytes()).status, 200);
    let http10 = format!("GET {CREDS} HTTP/1.0\r\n\r\n");
    assert_eq!(
        raw(agent.addr, http10.as_bytes()).status,
        200,
        "no Host at all (HTTP/1.0)"
    );
}
