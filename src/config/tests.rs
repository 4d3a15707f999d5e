use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(toml_text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let dir = std::env::temp_dir().join(format!("callgate-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A file per call: tests run in parallel.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!("{n}.toml"));
    std::fs::write(&path, toml_text).unwrap();
    Config::load(Some(&path), env(vars))
}

#[test]
fn defaults_use_the_loopback() {
    let config = Config::load(None, env(&[])).unwrap();
    assert!(config.uses_loopback());
    assert_eq!(config.listen_addr().port(), 8080);
    assert_eq!(config.effective_routes().len(), 10);
}

#[test]
fn named_env_vars_work_exactly() {
    let config = Config::load(
        None,
        env(&[
            ("CALLGATE_LISTEN", "0.0.0.0:9000"),
            (
                "CALLGATE_UPSTREAM_URL",
                "wss://example.openai.azure.com/openai/v1/realtime?model=dep",
            ),
            ("AZURE_OPENAI_API_KEY", "azkey"),
            ("CALLGATE_REALTIME_DIALECT", "beta"),
            ("CALLGATE_MODEL", "gpt-realtime-mini"),
            ("CALLGATE_VOICE", "cedar"),
            ("CALLGATE_INSTRUCTIONS", "Say hi."),
            ("CALLGATE_CALLS__UPSTREAM_CLOSE_WAIT_MS", "750"),
            ("CALLGATE_SECURITY__ALLOW_UNAUTHENTICATED", "true"),
        ]),
    )
    .unwrap();
    assert_eq!(config.listen, "0.0.0.0:9000");
    assert_eq!(config.upstream.dialect, RealtimeDialect::Beta);
    assert_eq!(config.upstream.model, "gpt-realtime-mini");
    assert_eq!(config.calls.upstream_close_wait, Duration::from_millis(750));
    let admin = Config::load(None, env(&[("CALLGATE_ADMIN_TOKEN", "adm")])).unwrap();
    assert_eq!(
        admin.security.admin_token.expose(),
        "adm",
        "the documented short name"
    );
    let bridge = config.bridge_config(None);
    assert_eq!(bridge.auth, UpstreamAuth::ApiKey(Secret::new("azkey")));
    assert_eq!(bridge.session.voice, "cedar");
    assert_eq!(bridge.session.instructions, "Say hi.");
    assert!(
        !format!("{config:?}").contains("azkey"),
        "secret leaked into Debug"
    );
}

#[test]
fn signature_only_twilio_routes_are_named_for_the_startup_warning() {
    let config = load(
        "[security.twilio]\nauth_token = \"t\"\npublic_base_url = \"wss://gw.example.com\"\n\
         [[routes]]\npath = \"/signed\"\ndialect = \"twilio\"\nauth = \"twilio_signature\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(config.signature_only_routes(), ["/signed"]);
    assert!(Config::load(None, Vec::new())
        .unwrap()
        .signature_only_routes()
        .is_empty());
}

#[test]
fn no_auth_on_a_public_address_refuses_to_start() {
    let err = Config::load(None, env(&[("CALLGATE_LISTEN", "0.0.0.0:8080")])).unwrap_err();
    assert_eq!(err.0.len(), 10, "{err}");
    assert!(err.0[0].contains("allow_unauthenticated"), "{err}");
    // Each auth mode names what it is missing.
    let err = load("[security]\ndefault_auth = \"jwt\"\n[[routes]]\npath = \"/t\"\ndialect = \"twilio\"\nauth = \"twilio_signature\"\nrequire_call_token = true\n", &[]).unwrap_err();
    let text = err.to_string();
    for needle in [
        "needs [[security.jwt.keys]]",
        "TWILIO_AUTH_TOKEN",
        "require_call_token needs",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn openai_key_alone_targets_openai_with_bearer() {
    let config = Config::load(None, env(&[("OPENAI_API_KEY", "sk-test")])).unwrap();
    assert!(!config.uses_loopback());
    let bridge = config.bridge_config(None);
    assert_eq!(
        bridge.url,
        "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    );
    assert_eq!(bridge.auth, UpstreamAuth::Bearer(Secret::new("sk-test")));
}

#[test]
fn every_error_is_reported_at_once() {
    let err = load(
        r#"
listen = "nowhere"
typo_key = 1
[upstream]
url = "http://x"
connect_timeout_ms = "soon"
dialect = "v2"
[session]
vad_threshold = 3.0
[[routes]]
path = "/healthz"
dialect = "twilio"
"#,
        &[],
    )
    .unwrap_err();
    let text = err.to_string();
    for needle in [
        "listen",
        "typo_key",
        "upstream.url",
        "connect_timeout_ms",
        "upstream.dialect",
        "vad_threshold",
        "routes[0].path",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[test]
fn the_example_file_documents_the_defaults() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/callgate.toml");
    let example = Config::load(Some(&path), env(&[])).unwrap();
    // Every key is spelled out in the example, with its default value.
    assert_eq!(format!("{example:?}"), format!("{:?}", Config::default()));
    let text = std::fs::read_to_string(&path).unwrap();
    for (alias, _) in ENV_ALIASES {
        assert!(
            text.contains(alias),
            "deploy/callgate.toml does not mention {alias}"
        );
    }
}

#[test]
fn routes_map_paths_to_dialects() {
    let config = load(
        "[[routes]]\npath = \"/ws/media\"\ndialect = \"twilio\"\n[[routes]]\npath = \"/vendor-stream\"\ndialect = \"vendor-stream\"\nsend_connected = false\n",
        &[],
    )
    .unwrap();
    let routes = config.effective_routes();
    assert!(routes.contains(&RouteConfig::new("/ws/media", Dialect::Twilio, false)));
    let vendor = routes.iter().find(|r| r.path == "/vendor-stream").unwrap();
    assert!(!vendor.send_connected);
    assert_eq!(routes.len(), 11);
}

#[test]
fn the_bridge_reads_its_own_sections() {
    let config = load(
        r#"
[session]
transcription_model = ""
[dtmf]
terminator = ""
inter_digit_timeout_ms = 700
[conversation]
send_dtmf = true
[conversation.profiles.sales]
voice = "ash"
[[tools]]
name = "lookup"
description = "Looks up an order"
url = "https://hooks.example/lookup"
[tools.parameters]
type = "object"
[calls]
idle_timeout_s = 7
"#,
        &[],
    )
    .unwrap();
    assert_eq!(config.session.transcription_model, None);
    assert_eq!(config.dtmf.terminator, None);
    assert_eq!(config.dtmf.inter_digit_timeout, Duration::from_millis(700));
    assert!(config.conversation.send_dtmf && config.conversation.end_call);
    assert_eq!(config.conversation.profiles["sales"].voice, "ash");
    assert_eq!(config.tools[0].timeout, Duration::from_secs(5), "default");
    assert_eq!(config.tools[0].parameters["type"], "object");
    assert_eq!(config.calls.idle_timeout, Duration::from_secs(7));
    let bridge = config.bridge_config(None);
    assert_eq!(bridge.dtmf.inter_digit_timeout, Duration::from_millis(700));
    assert!(bridge.tools.send_dtmf);

    let errors = load(
        "[dtmf]\nterminator = \"##\"\n[calls]\nstart_deadline_ms = 0\n",
        &[],
    )
    .unwrap_err()
    .0;
    assert!(
        errors.contains(&"dtmf.terminator: one of 0-9, *, #, A-D, or empty".to_owned()),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"calls.start_deadline_ms: must be greater than 0".to_owned()),
        "{errors:?}"
    );
}

#[test]
fn warm_pool_settings_are_checked() {
    let err = load("[upstream]\nprewarm = 5000\n", &[]).unwrap_err();
    assert!(err.to_string().contains("upstream.prewarm"), "{err}");
    let err = load("[upstream]\nprewarm = 2\nprewarm_max_age_s = 0\n", &[]).unwrap_err();
    assert!(err.to_string().contains("prewarm_max_age_s"), "{err}");
    let config = load("", &[("CALLGATE_UPSTREAM__PREWARM", "8")]).unwrap();
    assert_eq!(config.upstream.prewarm, 8);
    assert_eq!(config.upstream.prewarm_max_age_s, 600);
}

#[test]
fn providers_per_deployment_and_per_profile() {
    // GPT-Live without a key would run on the loopback, which speaks only the Realtime API.
    let err = load("[upstream]\nprovider = \"openai-live\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("upstream.provider"), "{err}");
    let err = load("[upstream]\nprovider = \"gemini-3\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("upstream.provider"), "{err}");
    // With a key: the provider's URL and model.
    let live = load(
        "",
        &[
            ("CALLGATE_UPSTREAM_PROVIDER", "openai-live"),
            ("OPENAI_API_KEY", "sk-x"),
        ],
    )
    .unwrap();
    let bridge = live.bridge_config(None);
    assert_eq!(bridge.url, "wss://api.openai.com/v1/live/sessions");
    assert_eq!(bridge.model, "gpt-live-1");
    assert_eq!(live.upstream.model_name(), "gpt-live-1");
    // A profile on another provider: its default URL, or its own when upstream.url is set.
    let text = "[conversation.profiles.acme]\nprovider = \"openai-live\"\n";
    let config = load(text, &[("OPENAI_API_KEY", "sk-x")]).unwrap();
    let bridge = config.bridge_config(None);
    assert_eq!(
        bridge.url,
        "wss://api.openai.com/v1/realtime?model=gpt-realtime"
    );
    let acme = bridge
        .for_profile(&config.conversation.profiles["acme"])
        .unwrap();
    assert_eq!(
        (acme.provider, acme.model.as_str()),
        (Provider::OpenaiLive, "gpt-live-1")
    );
    assert_eq!(acme.url, "wss://api.openai.com/v1/live/sessions");
    let same = callgate_handlers::bridge::Profile::default();
    assert!(bridge.for_profile(&same).is_none(), "no override, no copy");
    let with_url = format!("[upstream]\nurl = \"wss://gw.example/v1/realtime\"\n{text}");
    let err = load(&with_url, &[("OPENAI_API_KEY", "sk-x")]).unwrap_err();
    assert!(
        err.to_string().contains("conversation.profiles.acme.url"),
        "{err}"
    );
    let no_key = load(text, &[]).unwrap_err();
    assert!(
        no_key
            .to_string()
            .contains("conversation.profiles.acme.provider"),
        "{no_key}"
    );
    let err = load(
        "[upstream]\nprovider = \"openai-live\"\nprewarm = 2\n",
        &[("OPENAI_API_KEY", "sk-x")],
    )
    .unwrap_err();
    assert!(err.to_string().contains("upstream.prewarm"), "{err}"); // Gemini: its own key, in a header, and its URL and model.
    let gemini = load(
        "",
        &[
            ("CALLGATE_UPSTREAM_PROVIDER", "gemini-live"),
            ("GOOGLE_API_KEY", "g-1"),
        ],
    )
    .unwrap();
    let bridge = gemini.bridge_config(None);
    assert_eq!(bridge.auth, UpstreamAuth::GoogApiKey(Secret::new("g-1")));
    assert!(bridge
        .url
        .starts_with("wss://generativelanguage.googleapis.com/ws/"));
    assert!(!bridge.url.contains("key="));
    assert_eq!(bridge.model, "gemini-3.1-flash-live-preview");
    let both = load(
        "",
        &[
            ("CALLGATE_UPSTREAM_PROVIDER", "gemini-live"),
            ("GOOGLE_API_KEY", "g-1"),
            ("GEMINI_API_KEY", "g-2"),
        ],
    )
    .unwrap();
    assert_eq!(
        both.bridge_config(None).auth,
        UpstreamAuth::GoogApiKey(Secret::new("g-2"))
    );
    let err = load("[upstream]\nprovider = \"gemini-live\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("upstream.provider"), "{err}");
    let unknown = "[conversation.profiles.x]\nprovider = \"openai-imaginary\"\n";
    let err = load(unknown, &[("OPENAI_API_KEY", "sk-x")]).unwrap_err();
    assert!(err.to_string().contains("conversation.profiles"), "{err}");
    let across = "[conversation.profiles.g]\nprovider = \"gemini-live\"\n";
    let err = load(across, &[("OPENAI_API_KEY", "sk-x")]).unwrap_err();
    assert!(
        err.to_string()
            .contains("between openai-realtime and openai-live"),
        "{err}"
    );
}

#[test]
fn azure_token_sources_are_checked() {
    let both = "[upstream]\nurl = \"wss://x.openai.azure.com/openai/realtime\"\nazure_token_file = \"/t\"\nazure_token_command = \"az\"\n";
    let err = load(both, &[]).unwrap_err().to_string();
    assert!(err.contains("not both"), "{err}");
    let no_url = load("[upstream]\nazure_token_file = \"/t\"\n", &[]).unwrap_err();
    assert!(no_url.to_string().contains("deployment's URL"), "{no_url}");
    let config = load(
        "[upstream]\nurl = \"wss://x.openai.azure.com/openai/realtime\"\n",
        &[(
            "CALLGATE_UPSTREAM__AZURE_TOKEN_FILE",
            "/var/run/secrets/token",
        )],
    )
    .unwrap();
    let bridge = config.bridge_config(None);
    assert!(
        matches!(&bridge.auth, UpstreamAuth::BearerFrom(source) if **source == callgate_handlers::bridge::token::TokenSource::File("/var/run/secrets/token".into())),
        "{:?}",
        bridge.auth
    );
}

#[test]
fn cluster_settings_are_checked() {
    let err = load(
        "[cluster]\nredis_url = \"rediss://r:6379\"\nlease_ttl_s = 1\nadvertise_url = \"10.0.0.1\"\n",
        &[],
    )
    .unwrap_err()
    .to_string();
    for key in [
        "cluster.redis_url",
        "cluster.lease_ttl_s",
        "cluster.advertise_url",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }
    let err = load("[cluster]\non_redis_error = \"maybe\"\n", &[]).unwrap_err();
    assert!(err.to_string().contains("on_redis_error"), "{err}");
    let config = load("", &[("CALLGATE_CLUSTER__ON_REDIS_ERROR", "closed")]).unwrap();
    assert_eq!(config.cluster.on_redis_error, OnRedisError::Closed);
    assert!(!config.cluster.enabled(), "no Redis by default");
}

#[test]
fn the_kubernetes_configuration_loads_with_its_environment() {
    // The ConfigMap's callgate.toml, with the env the Deployment sets: a gateway that starts
    // (JWT on every route, on 0.0.0.0: loading refuses unauthenticated public routes) and
    // writes records to PostgreSQL.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes.yaml");
    let manifest = std::fs::read_to_string(path).unwrap();
    let toml_text: String = manifest
        .lines()
        .skip_while(|l| l.trim() != "callgate.toml: |")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", &l[4..]))
        .collect();
    assert!(toml_text.contains("default_auth"), "{toml_text}");
    let config = load(
        &toml_text,
        &[
            ("CALLGATE_CALLS__DRAIN_DEADLINE_S", "30"),
            (
                "CALLGATE_RECORDS__URL",
                "postgres://callgate:pw@postgres:5432/callgate",
            ),
            ("CALLGATE_CLUSTER__REDIS_URL", "redis://:pw@redis:6379"),
            ("CALLGATE_CLUSTER__ADVERTISE_URL", "http://10.1.2.3:8080"),
        ],
    )
    .unwrap();
    assert_eq!(config.listen, "0.0.0.0:8080");
    assert!(config.cluster.enabled());
    assert_eq!(config.cluster.advertise_url, "http://10.1.2.3:8080");
    assert_eq!(config.security.default_auth, AuthKind::Jwt);
    assert_eq!(
        config.records.url,
        "postgres://callgate:pw@postgres:5432/callgate"
    );
    // terminationGracePeriodSeconds covers the preStop sleep and the drain deadline.
    let grace: u64 = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(grace >= 5 + config.calls.drain_deadline.as_secs() + 5);
}
