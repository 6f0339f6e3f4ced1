//! Table-driven tests of the whole protocol (`Imds::respond`).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::StatusCode;

use super::*;
use crate::clock::Now;
use crate::creds::{Keys, Lookup, Role, Secret, StaticSource, Unavailable};

const ROLE: &str = "app-role";
const ME: &[u8] = b"ip:10.0.0.1";
const OTHER: &[u8] = b"ip:10.0.0.2";

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn now() -> Now {
    Now {
        wall: at(1_700_000_000),
        mono: Duration::from_secs(5000),
    }
}

fn data() -> InstanceData {
    InstanceData {
        account_id: "123456789012".into(),
        partition: "aws".into(),
        domain: "amazonaws.com".into(),
        region: "eu-west-1".into(),
        availability_zone: "eu-west-1b".into(),
        availability_zone_id: "euw1-az2".into(),
        instance_id: "i-0123456789abcdef0".into(),
        ami_id: "ami-0fedcba9876543210".into(),
        ami_launch_index: 0,
        ami_manifest_path: "(unknown)".into(),
        instance_type: "m6i.large".into(),
        instance_life_cycle: "on-demand".into(),
        architecture: "x86_64".into(),
        hostname: "ip-10-1-2-3.eu-west-1.compute.internal".into(),
        local_hostname: "ip-10-1-2-3.eu-west-1.compute.internal".into(),
        local_ipv4: Ipv4Addr::new(10, 1, 2, 3),
        public_hostname: None,
        public_ipv4: None,
        mac: "0e:11:22:33:44:55".into(),
        reservation_id: "r-0aaaabbbbccccdddd".into(),
        profile: "default-hvm".into(),
        security_groups: vec!["default".into(), "web".into()],
        network: NetworkInterface {
            interface_id: "eni-0123".into(),
            subnet_id: "subnet-0123".into(),
            vpc_id: "vpc-0123".into(),
            subnet_ipv4_cidr_block: "10.1.2.0/24".into(),
            vpc_ipv4_cidr_block: "10.1.0.0/16".into(),
            security_group_ids: vec!["sg-01".into(), "sg-02".into()],
        },
        block_device_mapping: vec![
            ("ami".into(), "/dev/xvda".into()),
            ("root".into(), "/dev/xvda".into()),
        ],
        public_keys: vec![("laptop".into(), "ssh-ed25519 AAAAC3 me@laptop".into())],
        tags: Some(vec![
            ("Name".into(), "web-1".into()),
            ("team".into(), "blue".into()),
        ]),
        user_data: Some(Bytes::from_static(b"#!/bin/sh\necho \xff\n")),
        pending_time: at(1_690_000_000),
        last_modified: at(1_690_000_000),
    }
}

fn keys() -> Keys {
    Keys {
        access_key_id: "ASIAEXAMPLEKEY000001".into(),
        secret_access_key: Secret::new("s3cr3t/with\"quote"),
        session_token: Secret::new("IQoJb3JpZ2luX2VjEJr//////////wEaCXVz"),
    }
}

fn imds_with(http_tokens: HttpTokens, data: &InstanceData) -> Imds {
    let source = Arc::new(StaticSource::new(
        keys(),
        Duration::from_secs(6 * 3600),
        Some("123456789012".to_owned()),
    ));
    let settings = Settings {
        http_tokens,
        hop_limit: 3,
        host_names: DEFAULT_HOST_NAMES.iter().map(|n| (*n).to_owned()).collect(),
    };
    Imds::new(data, settings, TokenAuthority::new([42; 32], 9), source)
}

fn imds(http_tokens: HttpTokens) -> Imds {
    imds_with(http_tokens, &data())
}

fn role() -> Role {
    Role::parse(ROLE).unwrap()
}

#[test]
fn cross_account_role_keeps_the_profile_in_the_instance_account() {
    let imds = imds(HttpTokens::Optional);
    let role = Role::parse("app-role@999999999999").unwrap();
    let caller = Caller {
        binding: ME,
        role: Some(&role),
    };
    let get = |path| Request {
        method: Method::Get,
        path,
        token: HeaderField::Absent,
        token_ttl: HeaderField::Absent,
        forwarded_for: false,
        host: HeaderField::Absent,
    };
    let info = respond_locally(&imds, &get("/latest/meta-data/iam/info"), &caller, now());
    let info: serde_json::Value = serde_json::from_slice(&info.body).unwrap();
    assert_eq!(
        info["InstanceProfileArn"],
        "arn:aws:iam::123456789012:instance-profile/app-role"
    );
    let ext = respond_locally(
        &imds,
        &get("/latest/meta-data/iam/security-credentials-extended/app-role"),
        &caller,
        now(),
    );
    let ext: serde_json::Value = serde_json::from_slice(&ext.body).unwrap();
    assert_eq!(
        ext["AccountId"], "999999999999",
        "the credentials are the role's account's"
    );
}

/// A token of the kind a case sends.
#[derive(Debug, Clone, Copy)]
enum Tok {
    None,
    Valid,
    ForOtherCaller,
    Expired,
    Garbage,
    Repeated,
}

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    token: Tok,
    has_role: bool,
    status: u16,
    body: Option<&'static str>,
}

const fn get(
    name: &'static str,
    path: &'static str,
    status: u16,
    body: Option<&'static str>,
) -> Case {
    Case {
        name,
        method: Method::Get,
        path,
        token: Tok::None,
        has_role: true,
        status,
        body,
    }
}

/// `imds.respond`, which must be the agent's own answer.
fn respond_locally(imds: &Imds, req: &Request<'_>, caller: &Caller<'_>, at: Now) -> Response {
    match imds.respond(req, caller, at) {
        Answer::Local(response) => response,
        Answer::Forward(forwarded) => panic!("forwarded: {forwarded:?}"),
    }
}

fn send(imds: &Imds, case: &Case) -> Response {
    match answer(imds, case) {
        Answer::Local(response) => response,
        Answer::Forward(forwarded) => panic!("{}: forwarded: {forwarded:?}", case.name),
    }
}

fn answer(imds: &Imds, case: &Case) -> Answer {
    let role = role();
    let caller = Caller {
        binding: ME,
        role: case.has_role.then_some(&role),
    };
    let valid = imds_token(imds, ME, 60);
    let other = imds_token(imds, OTHER, 60);
    let expired = {
        let earlier = Now {
            mono: now().mono - Duration::from_secs(61),
            ..now()
        };
        mint(imds, ME, 60, earlier)
    };
    let token = match case.token {
        Tok::None => HeaderField::Absent,
        Tok::Valid => HeaderField::One(&valid),
        Tok::ForOtherCaller => HeaderField::One(&other),
        Tok::Expired => HeaderField::One(&expired),
        Tok::Garbage => HeaderField::One("AQAEAHx-garbage=="),
        Tok::Repeated => HeaderField::Malformed,
    };
    let req = Request {
        method: case.method,
        path: case.path,
        token,
        token_ttl: HeaderField::Absent,
        forwarded_for: false,
        host: HeaderField::Absent,
    };
    imds.respond(&req, &caller, now())
}

fn mint(imds: &Imds, binding: &[u8], ttl: u32, at: Now) -> String {
    let req = Request {
        method: Method::Put,
        path: "/latest/api/token",
        token: HeaderField::Absent,
        token_ttl: HeaderField::One(&ttl.to_string()).to_owned_field(),
        forwarded_for: false,
        host: HeaderField::Absent,
    };
    let caller = Caller {
        binding,
        role: None,
    };
    let resp = respond_locally(imds, &req, &caller, at);
    assert_eq!(resp.status, StatusCode::OK, "minting a token");
    String::from_utf8(resp.body.to_vec()).unwrap()
}

fn imds_token(imds: &Imds, binding: &[u8], ttl: u32) -> String {
    mint(imds, binding, ttl, now())
}

/// Test-only: lets `mint` build a request from a temporary string.
trait ToOwnedField {
    fn to_owned_field(self) -> HeaderField<'static>;
}

impl ToOwnedField for HeaderField<'_> {
    fn to_owned_field(self) -> HeaderField<'static> {
        match self {
            HeaderField::One(v) => HeaderField::One(Box::leak(v.to_owned().into_boxed_str())),
            HeaderField::Absent => HeaderField::Absent,
            HeaderField::Malformed => HeaderField::Malformed,
        }
    }
}

fn check(imds: &Imds, cases: &[Case]) {
    for case in cases {
        let resp = send(imds, case);
        assert_eq!(resp.status.as_u16(), case.status, "{}: status", case.name);
        if let Some(body) = case.body {
            assert_eq!(
                String::from_utf8_lossy(&resp.body),
                body,
                "{}: body",
                case.name
            );
        }
        if case.status == 404 {
            assert_eq!(
                resp.body.as_ref(),
                NOT_FOUND_PAGE.as_bytes(),
                "{}: 404 page",
                case.name
            );
            assert_eq!(resp.content_type, ContentType::TextHtml, "{}", case.name);
        }
    }
}

const META_DATA_LISTING: &str = "ami-id\nami-launch-index\nami-manifest-path\nblock-device-mapping/\nhostname\niam/\ninstance-id\ninstance-life-cycle\ninstance-type\nlocal-hostname\nlocal-ipv4\nmac\nnetwork/\nplacement/\nprofile\npublic-keys/\nreservation-id\nsecurity-groups\nservices/\ntags/";

#[test]
fn listings() {
    let versions = catalog::VERSIONS.join("\n");
    let versions: &'static str = Box::leak(versions.into_boxed_str());
    let cases = [
        get("root", "/", 200, Some(versions)),
        get("root twice slashed", "//", 200, Some(versions)),
        get(
            "latest",
            "/latest",
            200,
            Some("dynamic\nmeta-data\nuser-data"),
        ),
        get(
            "latest/",
            "/latest/",
            200,
            Some("dynamic\nmeta-data\nuser-data"),
        ),
        get(
            "meta-data/",
            "/latest/meta-data/",
            200,
            Some(META_DATA_LISTING),
        ),
        get(
            "meta-data",
            "/latest/meta-data",
            200,
            Some(META_DATA_LISTING),
        ),
        get(
            "collapsed",
            "//latest///meta-data//",
            200,
            Some(META_DATA_LISTING),
        ),
        get(
            "placement/",
            "/latest/meta-data/placement/",
            200,
            Some("availability-zone\navailability-zone-id\nregion"),
        ),
        get(
            "services",
            "/latest/meta-data/services",
            200,
            Some("domain\npartition"),
        ),
        get(
            "block devices",
            "/latest/meta-data/block-device-mapping/",
            200,
            Some("ami\nroot"),
        ),
        get(
            "public keys",
            "/latest/meta-data/public-keys/",
            200,
            Some("0=laptop"),
        ),
        get(
            "public key 0",
            "/latest/meta-data/public-keys/0/",
            200,
            Some("openssh-key"),
        ),
        get(
            "public key",
            "/latest/meta-data/public-keys/0/openssh-key",
            200,
            Some("ssh-ed25519 AAAAC3 me@laptop"),
        ),
        get(
            "public key by name",
            "/latest/meta-data/public-keys/0=laptop",
            404,
            None,
        ),
        get("tags", "/latest/meta-data/tags/", 200, Some("instance/")),
        get(
            "tag keys",
            "/latest/meta-data/tags/instance",
            200,
            Some("Name\nteam"),
        ),
        get(
            "tag value",
            "/latest/meta-data/tags/instance/team",
            200,
            Some("blue"),
        ),
        get(
            "macs",
            "/latest/meta-data/network/interfaces/macs/",
            200,
            Some("0e:11:22:33:44:55/"),
        ),
        get(
            "iam/",
            "/latest/meta-data/iam/",
            200,
            Some("info\nsecurity-credentials/"),
        ),
        get(
            "iam",
            "/latest/meta-data/iam",
            200,
            Some("info\nsecurity-credentials/"),
        ),
        get(
            "roles",
            "/latest/meta-data/iam/security-credentials/",
            200,
            Some(ROLE),
        ),
        get(
            "roles, no slash",
            "/latest/meta-data/iam/security-credentials",
            200,
            Some(ROLE),
        ),
        get(
            "roles, extended",
            "/latest/meta-data/iam/security-credentials-extended/",
            200,
            Some(ROLE),
        ),
        get(
            "dynamic",
            "/latest/dynamic/",
            200,
            Some("instance-identity/"),
        ),
        get(
            "identity",
            "/latest/dynamic/instance-identity/",
            200,
            Some("document"),
        ),
        get(
            "old version",
            "/2009-04-04/meta-data/instance-id",
            200,
            Some("i-0123456789abcdef0"),
        ),
        get("1.0", "/1.0/meta-data/local-ipv4", 200, Some("10.1.2.3")),
        // A trailing slash on a value is ignored, as EC2 does: botocore
        // reads `placement/availability-zone/`.
        get(
            "value with slash",
            "/latest/meta-data/placement/availability-zone/",
            200,
            Some("eu-west-1b"),
        ),
        get("user-data/", "/latest/user-data/", 200, None),
        get(
            "role with slash",
            "/latest/meta-data/iam/security-credentials/app-role/",
            200,
            None,
        ),
        get("info with slash", "/latest/meta-data/iam/info/", 200, None),
    ];
    check(&imds(HttpTokens::Optional), &cases);
}

#[test]
fn values() {
    let cases = [
        get(
            "instance-id",
            "/latest/meta-data/instance-id",
            200,
            Some("i-0123456789abcdef0"),
        ),
        get(
            "ami-id",
            "/latest/meta-data/ami-id",
            200,
            Some("ami-0fedcba9876543210"),
        ),
        get(
            "launch index",
            "/latest/meta-data/ami-launch-index",
            200,
            Some("0"),
        ),
        get(
            "type",
            "/latest/meta-data/instance-type",
            200,
            Some("m6i.large"),
        ),
        get(
            "hostname",
            "/latest/meta-data/hostname",
            200,
            Some("ip-10-1-2-3.eu-west-1.compute.internal"),
        ),
        get(
            "local-ipv4",
            "/latest/meta-data/local-ipv4",
            200,
            Some("10.1.2.3"),
        ),
        get(
            "mac",
            "/latest/meta-data/mac",
            200,
            Some("0e:11:22:33:44:55"),
        ),
        get(
            "az",
            "/latest/meta-data/placement/availability-zone",
            200,
            Some("eu-west-1b"),
        ),
        get(
            "region",
            "/latest/meta-data/placement/region",
            200,
            Some("eu-west-1"),
        ),
        get(
            "sgs",
            "/latest/meta-data/security-groups",
            200,
            Some("default\nweb"),
        ),
        get(
            "partition",
            "/latest/meta-data/services/partition",
            200,
            Some("aws"),
        ),
        get(
            "eni sg ids",
            "/latest/meta-data/network/interfaces/macs/0e:11:22:33:44:55/security-group-ids",
            200,
            Some("sg-01\nsg-02"),
        ),
        get(
            "eni owner",
            "/latest/meta-data/network/interfaces/macs/0e:11:22:33:44:55/owner-id",
            200,
            Some("123456789012"),
        ),
        get(
            "root device",
            "/latest/meta-data/block-device-mapping/root",
            200,
            Some("/dev/xvda"),
        ),
    ];
    check(&imds(HttpTokens::Optional), &cases);
}

#[test]
fn missing_paths_are_ec2_404s() {
    let cases = [
        get("unknown version", "/2099-01-01/meta-data/", 404, None),
        get("unknown top", "/latest/foo", 404, None),
        get("unknown key", "/latest/meta-data/nope", 404, None),
        get(
            "below a leaf",
            "/latest/meta-data/instance-id/more",
            404,
            None,
        ),
        get(
            "traversal",
            "/latest/meta-data/../meta-data/instance-id",
            404,
            None,
        ),
        get(
            "traversal into iam",
            "/latest/meta-data/placement/../iam/security-credentials/app-role",
            404,
            None,
        ),
        get("dot segment", "/latest/./meta-data/", 404, None),
        get("relative", "latest/meta-data/", 404, None),
        get(
            "encoded dots",
            "/latest/meta-data/%2e%2e/instance-id",
            404,
            None,
        ),
        get(
            "too deep",
            "/latest/meta-data/a/b/c/d/e/f/g/h/i/j/k/l",
            404,
            None,
        ),
        get(
            "pkcs7",
            "/latest/dynamic/instance-identity/pkcs7",
            404,
            None,
        ),
        get(
            "iam before 2012",
            "/2011-05-01/meta-data/iam/security-credentials/app-role",
            404,
            None,
        ),
        get(
            "token under meta-data",
            "/latest/meta-data/api/token",
            404,
            None,
        ),
    ];
    check(&imds(HttpTokens::Optional), &cases);
}

#[test]
fn iam_is_only_the_callers_own_role() {
    let cases = [
        get(
            "own role",
            "/latest/meta-data/iam/security-credentials/app-role",
            200,
            None,
        ),
        get(
            "other role",
            "/latest/meta-data/iam/security-credentials/admin",
            404,
            None,
        ),
        get(
            "case differs",
            "/latest/meta-data/iam/security-credentials/App-Role",
            404,
            None,
        ),
        get(
            "segment after role",
            "/latest/meta-data/iam/security-credentials/app-role/x",
            404,
            None,
        ),
        get(
            "segment after role, extended",
            "/latest/meta-data/iam/security-credentials-extended/app-role/x",
            404,
            None,
        ),
        get("unknown iam key", "/latest/meta-data/iam/keys", 404, None),
        Case {
            has_role: false,
            ..get(
                "no role: listing",
                "/latest/meta-data/iam/security-credentials/",
                404,
                None,
            )
        },
        Case {
            has_role: false,
            ..get(
                "no role: creds",
                "/latest/meta-data/iam/security-credentials/app-role",
                404,
                None,
            )
        },
        Case {
            has_role: false,
            ..get("no role: info", "/latest/meta-data/iam/info", 404, None)
        },
        Case {
            has_role: false,
            ..get("no role: iam/", "/latest/meta-data/iam/", 404, None)
        },
        Case {
            has_role: false,
            ..get(
                "no role: extended",
                "/latest/meta-data/iam/security-credentials-extended/app-role",
                404,
                None,
            )
        },
    ];
    check(&imds(HttpTokens::Optional), &cases);
}

#[test]
fn meta_data_listing_has_iam_only_with_a_role() {
    let imds = imds(HttpTokens::Optional);
    let without = Case {
        has_role: false,
        ..get("no role", "/latest/meta-data/", 200, None)
    };
    let body = send(&imds, &without).body;
    let body = String::from_utf8_lossy(&body);
    assert!(!body.lines().any(|l| l == "iam/"), "{body}");
    assert_eq!(body, META_DATA_LISTING.replace("iam/\n", ""));
    let old = get("old version", "/2011-05-01/meta-data/", 200, None);
    assert!(!String::from_utf8_lossy(&send(&imds, &old).body).contains("iam/"));
}

#[test]
fn credentials_document() {
    let imds = imds(HttpTokens::Optional);
    let resp = send(
        &imds,
        &get(
            "creds",
            "/latest/meta-data/iam/security-credentials/app-role",
            200,
            None,
        ),
    );
    assert_eq!(resp.content_type, ContentType::TextPlain);
    assert_eq!(resp.class, Class::Credentials);
    let body = String::from_utf8(resp.body.to_vec()).unwrap();
    // Field order and layout as EC2 writes them; the expiry rolls on a
    // three-hour grid (half the six-hour lifetime).
    let want = "{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"2023-11-14T21:00:00Z\",\n  \"Type\" : \"AWS-HMAC\",\n  \"AccessKeyId\" : \"ASIAEXAMPLEKEY000001\",\n  \"SecretAccessKey\" : \"s3cr3t/with\\\"quote\",\n  \"Token\" : \"IQoJb3JpZ2luX2VjEJr//////////wEaCXVz\",\n  \"Expiration\" : \"2023-11-15T03:00:00Z\"\n}";
    assert_eq!(body, want);
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed["SecretAccessKey"], "s3cr3t/with\"quote");
    assert!(parsed.get("AccountId").is_none());

    let ext = send(
        &imds,
        &get(
            "ext",
            "/latest/meta-data/iam/security-credentials-extended/app-role",
            200,
            None,
        ),
    );
    let ext: serde_json::Value = serde_json::from_slice(&ext.body).unwrap();
    assert_eq!(ext["AccountId"], "123456789012");
    assert_eq!(ext["AccessKeyId"], "ASIAEXAMPLEKEY000001");
}

#[test]
fn iam_info() {
    let imds = imds(HttpTokens::Optional);
    let resp = send(&imds, &get("info", "/latest/meta-data/iam/info", 200, None));
    let info: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(info["Code"], "Success");
    assert_eq!(
        info["InstanceProfileArn"],
        "arn:aws:iam::123456789012:instance-profile/app-role"
    );
    assert_eq!(
        info["InstanceProfileId"],
        crate::creds::unique_id(
            "AIPA",
            "arn:aws:iam::123456789012:instance-profile/app-role"
        )
    );
    assert_eq!(info["LastUpdated"], "2023-11-14T21:00:00Z");
}

/// A source that has nothing to serve: EC2's 200 with a failure `Code`.
#[derive(Debug)]
struct Failing;

impl crate::creds::CredentialSource for Failing {
    fn lookup(&self, _role: &Role, now: SystemTime) -> Lookup {
        Lookup::Unavailable(Unavailable {
            code: "AssumeRoleUnauthorizedAccess".into(),
            message: "EC2 cannot assume the role app-role.".into(),
            last_updated: now,
        })
    }
}

#[test]
fn unavailable_credentials_answer_with_a_code() {
    let settings = Settings {
        http_tokens: HttpTokens::Optional,
        hop_limit: 1,
        host_names: Vec::new(),
    };
    let imds = Imds::new(
        &data(),
        settings,
        TokenAuthority::new([1; 32], 0),
        Arc::new(Failing),
    );
    for path in [
        "/latest/meta-data/iam/security-credentials/app-role",
        "/latest/meta-data/iam/security-credentials-extended/app-role",
        "/latest/meta-data/iam/info",
    ] {
        let resp = send(&imds, &get("failing", path, 200, None));
        assert_eq!(resp.status, StatusCode::OK, "{path}");
        let doc: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(doc["Code"], "AssumeRoleUnauthorizedAccess", "{path}");
        assert_eq!(doc["Message"], "EC2 cannot assume the role app-role.");
        assert!(doc.get("AccessKeyId").is_none());
    }
}

#[test]
fn identity_document_agrees_with_the_tree() {
    let imds = imds(HttpTokens::Optional);
    let resp = send(
        &imds,
        &get(
            "doc",
            "/latest/dynamic/instance-identity/document",
            200,
            None,
        ),
    );
    let doc: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
    let value = |path: &'static str| {
        String::from_utf8(send(&imds, &get("v", path, 200, None)).body.to_vec()).unwrap()
    };
    assert_eq!(doc["instanceId"], value("/latest/meta-data/instance-id"));
    assert_eq!(doc["imageId"], value("/latest/meta-data/ami-id"));
    assert_eq!(
        doc["instanceType"],
        value("/latest/meta-data/instance-type")
    );
    assert_eq!(doc["privateIp"], value("/latest/meta-data/local-ipv4"));
    assert_eq!(doc["region"], value("/latest/meta-data/placement/region"));
    assert_eq!(
        doc["availabilityZone"],
        value("/latest/meta-data/placement/availability-zone")
    );
    assert_eq!(doc["accountId"], "123456789012");
    assert_eq!(doc["pendingTime"], "2023-07-22T04:26:40Z");
    assert_eq!(doc["kernelId"], serde_json::Value::Null);
    let body = String::from_utf8(resp.body.to_vec()).unwrap();
    assert!(
        body.starts_with(
            "{\n  \"accountId\" : \"123456789012\",\n  \"architecture\" : \"x86_64\","
        ),
        "{body}"
    );
    // iam/info names the same account.
    let info: serde_json::Value =
        serde_json::from_str(&value("/latest/meta-data/iam/info")).unwrap();
    assert!(
        info["InstanceProfileArn"]
            .as_str()
            .unwrap()
            .contains(":123456789012:")
    );
}

#[test]
fn user_data() {
    let imds = imds(HttpTokens::Optional);
    let resp = send(&imds, &get("ud", "/latest/user-data", 200, None));
    assert_eq!(resp.content_type, ContentType::OctetStream);
    assert_eq!(resp.body.as_ref(), b"#!/bin/sh\necho \xff\n");
    let mut without = data();
    without.user_data = None;
    let imds = imds_with(HttpTokens::Optional, &without);
    check(
        &imds,
        &[
            get("no user data", "/latest/user-data", 404, None),
            get(
                "root without user-data",
                "/latest/",
                200,
                Some("dynamic\nmeta-data"),
            ),
        ],
    );
}

#[test]
fn absent_optional_data_is_absent() {
    let mut d = data();
    d.tags = None;
    d.public_keys.clear();
    let imds = imds_with(HttpTokens::Optional, &d);
    check(
        &imds,
        &[
            get("no tags", "/latest/meta-data/tags/instance", 404, None),
            get("no keys", "/latest/meta-data/public-keys/", 404, None),
            get("no public ip", "/latest/meta-data/public-ipv4", 404, None),
        ],
    );
    let listing = send(&imds, &get("l", "/latest/meta-data/", 200, None)).body;
    let listing = String::from_utf8_lossy(&listing);
    assert!(
        !listing.contains("tags/") && !listing.contains("public-keys/"),
        "{listing}"
    );
}

fn token_put(
    imds: &Imds,
    path: &str,
    ttl: HeaderField<'_>,
    forwarded_for: bool,
    method: Method,
) -> Response {
    let req = Request {
        method,
        path,
        token: HeaderField::Absent,
        token_ttl: ttl,
        forwarded_for,
        host: HeaderField::Absent,
    };
    respond_locally(
        imds,
        &req,
        &Caller {
            binding: ME,
            role: None,
        },
        now(),
    )
}

#[test]
fn token_put_rules() {
    let imds = imds(HttpTokens::Required);
    let ok = token_put(
        &imds,
        "/latest/api/token",
        HeaderField::One("21600"),
        false,
        Method::Put,
    );
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.token_ttl, Some(21_600));
    assert_eq!(ok.content_type, ContentType::TextPlain);
    assert_eq!(ok.hop_limit, Some(3));
    assert_eq!(ok.body.len(), 44);

    for path in [
        "/2021-03-23/api/token",
        "//latest//api/token",
        "/1.0/api/token",
    ] {
        let resp = token_put(&imds, path, HeaderField::One("1"), false, Method::Put);
        assert_eq!(resp.status, StatusCode::OK, "{path}");
        assert_eq!(resp.token_ttl, Some(1), "{path}");
    }

    let bad_ttls = [
        HeaderField::Absent,
        HeaderField::Malformed,
        HeaderField::One("0"),
        HeaderField::One("21601"),
        HeaderField::One("-1"),
        HeaderField::One(""),
        HeaderField::One("abc"),
        HeaderField::One("1.5"),
    ];
    for ttl in bad_ttls {
        let resp = token_put(&imds, "/latest/api/token", ttl, false, Method::Put);
        assert_eq!(resp.status, StatusCode::BAD_REQUEST, "{ttl:?}");
        assert!(String::from_utf8_lossy(&resp.body).contains("400 - Bad Request"));
        assert_eq!(resp.token_ttl, None);
    }

    let proxied = token_put(
        &imds,
        "/latest/api/token",
        HeaderField::One("60"),
        true,
        Method::Put,
    );
    assert_eq!(proxied.status, StatusCode::FORBIDDEN);
    assert!(proxied.body.is_empty());

    let slashed = token_put(
        &imds,
        "/latest/api/token/",
        HeaderField::One("60"),
        false,
        Method::Put,
    );
    assert_eq!(slashed.status, StatusCode::FORBIDDEN);

    for method in [Method::Get, Method::Head, Method::Other] {
        let resp = token_put(
            &imds,
            "/latest/api/token",
            HeaderField::One("60"),
            false,
            method,
        );
        assert_eq!(resp.status, StatusCode::METHOD_NOT_ALLOWED, "{method:?}");
        assert_eq!(resp.allow, Some("OPTIONS, PUT"));
        assert!(!resp.body.is_empty() && resp.body.len() != 44);
    }
    let options = token_put(
        &imds,
        "/latest/api/token",
        HeaderField::One("60"),
        false,
        Method::Options,
    );
    assert_eq!(options.status, StatusCode::OK);
    assert!(options.body.is_empty(), "OPTIONS never mints a token");

    let unknown_version = token_put(
        &imds,
        "/2099-01-01/api/token",
        HeaderField::One("60"),
        false,
        Method::Put,
    );
    assert_eq!(
        unknown_version.status,
        StatusCode::UNAUTHORIZED,
        "not a token path: needs a token first"
    );
}

#[test]
fn tokens_in_optional_mode() {
    let imds = imds(HttpTokens::Optional);
    let path = "/latest/meta-data/instance-id";
    let with = |token| Case {
        token,
        ..get("t", path, 0, None)
    };
    let cases = [
        Case {
            name: "no token: v1",
            status: 200,
            ..with(Tok::None)
        },
        Case {
            name: "valid",
            status: 200,
            ..with(Tok::Valid)
        },
        Case {
            name: "other caller's",
            status: 401,
            ..with(Tok::ForOtherCaller)
        },
        Case {
            name: "expired",
            status: 401,
            ..with(Tok::Expired)
        },
        Case {
            name: "garbage",
            status: 401,
            ..with(Tok::Garbage)
        },
        Case {
            name: "repeated header",
            status: 401,
            ..with(Tok::Repeated)
        },
    ];
    check(&imds, &cases);
    // The remaining lifetime is echoed on a GET with a token, not without.
    assert_eq!(send(&imds, &with(Tok::Valid)).token_ttl, Some(60));
    assert_eq!(send(&imds, &with(Tok::None)).token_ttl, None);
}

#[test]
fn tokens_in_required_mode() {
    let imds = imds(HttpTokens::Required);
    let with = |path, token| Case {
        token,
        ..get("t", path, 0, None)
    };
    let cases = [
        Case {
            name: "no token",
            status: 401,
            ..with("/latest/meta-data/instance-id", Tok::None)
        },
        Case {
            name: "no token, missing path: 401 before routing",
            status: 401,
            ..with("/latest/nope", Tok::None)
        },
        Case {
            name: "no token, bad path",
            status: 401,
            ..with("latest", Tok::None)
        },
        Case {
            name: "no token, root",
            status: 401,
            ..with("/", Tok::None)
        },
        Case {
            name: "no token, creds",
            status: 401,
            ..with(
                "/latest/meta-data/iam/security-credentials/app-role",
                Tok::None,
            )
        },
        Case {
            name: "valid",
            status: 200,
            ..with("/latest/meta-data/instance-id", Tok::Valid)
        },
        Case {
            name: "valid, missing path",
            status: 404,
            ..with("/latest/nope", Tok::Valid)
        },
        Case {
            name: "valid, creds",
            status: 200,
            ..with(
                "/latest/meta-data/iam/security-credentials/app-role",
                Tok::Valid,
            )
        },
        Case {
            name: "other caller's",
            status: 401,
            ..with("/latest/meta-data/instance-id", Tok::ForOtherCaller)
        },
        Case {
            name: "expired",
            status: 401,
            ..with("/latest/meta-data/instance-id", Tok::Expired)
        },
        Case {
            name: "garbage",
            status: 401,
            ..with("/latest/meta-data/instance-id", Tok::Garbage)
        },
        Case {
            name: "no token, POST: 401 before 405",
            status: 401,
            method: Method::Other,
            ..with("/latest/meta-data/", Tok::None)
        },
    ];
    check(&imds, &cases);
    let resp = send(&imds, &with("/latest/meta-data/instance-id", Tok::None));
    assert!(String::from_utf8_lossy(&resp.body).contains("401 - Unauthorized"));
}

#[test]
fn only_get_and_head_read_metadata() {
    let imds = imds(HttpTokens::Optional);
    for method in [Method::Put, Method::Options, Method::Other] {
        let resp = send(
            &imds,
            &Case {
                method,
                ..get("m", "/latest/meta-data/", 0, None)
            },
        );
        assert_eq!(resp.status, StatusCode::METHOD_NOT_ALLOWED, "{method:?}");
        assert_eq!(resp.allow, Some("GET, HEAD"));
    }
    let head = send(
        &imds,
        &Case {
            method: Method::Head,
            ..get("h", "/latest/meta-data/instance-id", 0, None)
        },
    );
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        head.body.as_ref(),
        b"i-0123456789abcdef0",
        "the transport drops HEAD bodies"
    );
}

#[test]
fn a_token_from_one_caller_fails_for_another_on_every_path() {
    let imds = imds(HttpTokens::Optional);
    let token = imds_token(&imds, ME, 300);
    let role = role();
    for path in [
        "/latest/meta-data/iam/security-credentials/app-role",
        "/latest/meta-data/",
        "/",
    ] {
        let req = Request {
            method: Method::Get,
            path,
            token: HeaderField::One(&token),
            token_ttl: HeaderField::Absent,
            forwarded_for: false,
            host: HeaderField::Absent,
        };
        let mine = respond_locally(
            &imds,
            &req,
            &Caller {
                binding: ME,
                role: Some(&role),
            },
            now(),
        );
        let theirs = respond_locally(
            &imds,
            &req,
            &Caller {
                binding: OTHER,
                role: Some(&role),
            },
            now(),
        );
        assert_eq!(mine.status, StatusCode::OK, "{path}");
        assert_eq!(theirs.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[test]
fn host_must_name_the_imds() {
    let imds = imds(HttpTokens::Optional);
    let settings = imds.settings();
    let allowed = [
        HeaderField::Absent,
        HeaderField::One("169.254.169.254"),
        HeaderField::One("169.254.169.254:80"),
        HeaderField::One("127.0.0.1:1338"),
        HeaderField::One("[fd00:ec2::254]"),
        HeaderField::One("[::1]:1338"),
        HeaderField::One("localhost:1338"),
        HeaderField::One("LOCALHOST"),
        HeaderField::One("instance-data"),
        HeaderField::One("instance-data.ec2.internal."),
    ];
    for host in allowed {
        assert!(settings.host_allowed(host), "{host:?}");
    }
    let refused = [
        HeaderField::Malformed,
        HeaderField::One("evil.example"),
        HeaderField::One("evil.example:80"),
        HeaderField::One("169.254.169.254.evil.example"),
        HeaderField::One("localhost.evil.example"),
        HeaderField::One("[fd00:ec2::254"),
        HeaderField::One("[::1]x"),
        HeaderField::One("127.0.0.1:port"),
        HeaderField::One("127.0.0.1:123456"),
        HeaderField::One(""),
    ];
    for host in refused {
        assert!(!settings.host_allowed(host), "{host:?}");
    }
    // Refused before anything else: no token, no metadata.
    for (method, path) in [
        (Method::Put, "/latest/api/token"),
        (
            Method::Get,
            "/latest/meta-data/iam/security-credentials/app-role",
        ),
    ] {
        let req = Request {
            method,
            path,
            token: HeaderField::Absent,
            token_ttl: HeaderField::One("60"),
            forwarded_for: false,
            host: HeaderField::One("attacker.example"),
        };
        let role = role();
        let resp = respond_locally(
            &imds,
            &req,
            &Caller {
                binding: ME,
                role: Some(&role),
            },
            now(),
        );
        assert_eq!(resp.status, StatusCode::FORBIDDEN, "{path}");
        assert!(String::from_utf8_lossy(&resp.body).contains("403 - Forbidden"));
    }
}

/// Proxy mode: the agent keeps tokens and `iam/`, forwards what the
/// allowlist lets through, and 404s the rest.
#[test]
fn proxy_mode_forwards_only_allowed_paths() {
    let imds = imds(HttpTokens::Required).with_upstream(upstream::Allowlist::default_list());
    let forwarded = |case: Case| match answer(&imds, &case) {
        Answer::Local(response) => {
            assert_eq!(response.status.as_u16(), case.status, "{}", case.name);
            None
        }
        Answer::Forward(forwarded) => {
            assert_eq!(case.status, 200, "{}: forwarded", case.name);
            Some(forwarded.request)
        }
    };
    let valid = |mut case: Case| {
        case.token = Tok::Valid;
        case
    };
    // The token check comes first, as without an upstream.
    assert_eq!(
        forwarded(get("no token", "/latest/meta-data/instance-id", 401, None)),
        None
    );
    let f = forwarded(valid(get(
        "leaf",
        "/latest/meta-data/instance-id",
        200,
        None,
    )))
    .unwrap();
    assert_eq!(f.path, "/latest/meta-data/instance-id");
    assert_eq!(f.keep, None);
    let f = forwarded(valid(get(
        "subtree",
        "//2021-07-15/meta-data//placement/",
        200,
        None,
    )))
    .unwrap();
    assert_eq!(f.path, "/2021-07-15/meta-data/placement/");
    let f = forwarded(valid(get("listing", "/latest/meta-data/", 200, None))).unwrap();
    assert_eq!(f.extra, vec!["iam/"], "the caller's role is listed");
    let keep = f.keep.unwrap();
    assert!(keep.contains(&"instance-id".to_owned()) && !keep.contains(&"iam".to_owned()));
    let mut no_role = valid(get("listing, no role", "/latest/meta-data/", 200, None));
    no_role.has_role = false;
    assert!(forwarded(no_role).unwrap().extra.is_empty());
    let f = forwarded(valid(get("version", "/latest", 200, None))).unwrap();
    assert_eq!(f.path, "/latest/");
    // Never forwarded: the agent's own iam/, the instance's credentials,
    // user data (opt-in), unknown paths.
    let own = forwarded(valid(get(
        "iam",
        "/latest/meta-data/iam/security-credentials/",
        200,
        Some(ROLE),
    )));
    assert_eq!(own, None);
    for path in [
        "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
        "/latest/meta-data/identity-credentials/",
        "/latest/user-data",
        "/latest/meta-data/no-such-thing",
        "/latest/meta-data/iam/security-credentials/instance-role",
    ] {
        assert_eq!(
            forwarded(valid(get("denied", path, 404, None))),
            None,
            "{path}"
        );
    }
    // The versions are the agent's own answer.
    assert_eq!(forwarded(valid(get("root", "/", 200, None))), None);
    // Only plain names go out: an upstream may decode or resolve the rest
    // into a path the allowlist never saw.
    for path in [
        "/latest/meta-data/network/%2e%2e/iam/security-credentials/",
        "/latest/meta-data/placement/..%2f..%2fiam/security-credentials/",
        "/latest/meta-data/tags/..;/iam/",
        "/latest/meta-data/placement/..\\..\\iam",
        "/latest/meta-data/tags/instance/a\u{7f}b",
        "/latest/meta-data/tags/instance/caf\u{e9}",
    ] {
        assert_eq!(
            forwarded(valid(get("not plain", path, 404, None))),
            None,
            "{path}"
        );
    }
    // What real names look like still goes.
    assert!(
        forwarded(valid(get(
            "mac",
            "/latest/meta-data/network/interfaces/macs/0e:49:61:0f:c3:11/local-ipv4s",
            200,
            None
        )))
        .is_some()
    );
}

/// Only a request that would be served the caller's own credentials (or
/// the listing and `info` an SDK reads first) may start, and wait for, a
/// fetch: not a tokenless one where tokens are required, not another
/// role's name, not a PUT, not a path under `iam/` that does not exist.
#[test]
fn only_requests_for_the_callers_own_credentials_ask_for_them() {
    let imds = imds(HttpTokens::Required);
    let role = role();
    let me = Caller {
        binding: ME,
        role: Some(&role),
    };
    let valid = imds_token(&imds, ME, 60);
    let theirs = imds_token(&imds, OTHER, 60);
    let ask = |method, path, token: HeaderField<'_>, caller: &Caller<'_>| {
        let req = Request {
            method,
            path,
            token,
            token_ttl: HeaderField::Absent,
            forwarded_for: false,
            host: HeaderField::Absent,
        };
        imds.asks_for_credentials(&req, caller, now())
    };
    let t = HeaderField::One(valid.as_str());
    let creds = "/latest/meta-data/iam/security-credentials/app-role";
    for path in [
        creds,
        "/latest/meta-data/iam/security-credentials/",
        "/latest/meta-data/iam/security-credentials-extended/app-role",
        "/latest/meta-data/iam/info",
        "/2021-07-15/meta-data/iam/security-credentials/app-role",
    ] {
        assert!(ask(Method::Get, path, t, &me), "{path}");
    }
    assert!(ask(Method::Head, creds, t, &me));
    assert!(
        !ask(Method::Get, creds, HeaderField::Absent, &me),
        "no token"
    );
    assert!(
        !ask(Method::Get, creds, HeaderField::One(theirs.as_str()), &me),
        "another caller's token"
    );
    assert!(!ask(Method::Put, creds, t, &me), "PUT");
    for path in [
        "/latest/meta-data/iam/security-credentials/other-role",
        "/latest/meta-data/iam/",
        "/latest/meta-data/iam/nothing-here",
        "/latest/meta-data/instance-id",
        "/latest/user-data/iam/info",
        "/1.0/meta-data/iam/info",
    ] {
        assert!(!ask(Method::Get, path, t, &me), "{path}");
    }
    let nobody = Caller {
        binding: ME,
        role: None,
    };
    assert!(!ask(Method::Get, creds, t, &nobody), "no role");
    // Where tokens are optional, a tokenless GET asks too (IMDSv1).
    let v1 = self::imds(HttpTokens::Optional);
    let req = Request {
        method: Method::Get,
        path: creds,
        token: HeaderField::Absent,
        token_ttl: HeaderField::Absent,
        forwarded_for: false,
        host: HeaderField::Absent,
    };
    assert!(v1.asks_for_credentials(&req, &me, now()));
}
