//! The container image starts as its own user. No container engine runs here, so this test
//! does what the image would: it reads `deploy/Dockerfile`'s final stage (ENV, WORKDIR, USER,
//! CMD), lays its paths out under a scratch root, and runs the gateway with that
//! environment, in that working directory, as that uid, then checks the gateway serves and
//! writes its records where the image gives it room, privately.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The final stage of the Dockerfile, as the test needs it.
#[derive(Debug, Default)]
struct Image {
    env: BTreeMap<String, String>,
    workdir: String,
    user: (u32, u32),
    cmd: Vec<String>,
    /// (source in the repository, path in the image)
    copies: Vec<(String, String)>,
}

fn image() -> Image {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/Dockerfile"))
            .unwrap();
    let last_stage = text
        .rsplit_once("\nFROM ")
        .expect("a multi-stage Dockerfile")
        .1;
    let mut image = Image::default();
    for line in last_stage.lines().map(str::trim) {
        let (instruction, rest) = line.split_once(' ').unwrap_or((line, ""));
        match instruction {
            "ENV" => {
                let (key, value) = rest.split_once('=').expect("ENV KEY=value, one per line");
                image.env.insert(key.into(), value.into());
            }
            "WORKDIR" => image.workdir = rest.into(),
            "USER" => {
                let (uid, gid) = rest.split_once(':').expect("USER uid:gid");
                image.user = (uid.parse().unwrap(), gid.parse().unwrap());
            }
            "CMD" => image.cmd = serde_json::from_str(rest).expect("CMD as a JSON array"),
            "COPY" if !rest.starts_with("--from") => {
                let (from, to) = rest.split_once(' ').unwrap();
                image.copies.push((from.into(), to.into()));
            }
            _ => {}
        }
    }
    image
}

/// `path` in the image, under `root`.
fn rooted(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[test]
fn the_image_runs_as_its_user_and_keeps_records_in_its_data_directory() {
    let image = image();
    assert_eq!(image.user, (65534, 65534), "{image:?}");
    assert_eq!(image.cmd, ["serve"]);
    assert!(
        !image.workdir.is_empty() && image.workdir != "/",
        "a writable working directory"
    );
    if std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(1)
        != 0
    {
        eprintln!("SKIPPED: running as uid 65534 needs root (CI runs as root)");
        return;
    }
    let root = std::env::temp_dir().join(format!("callgate-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (from, to) in &image.copies {
        let target = rooted(&root, to);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join(from), &target).unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // The Dockerfile's `RUN mkdir … && chown 65534:65534 … && chmod 0700 …` of the workdir.
    let data = rooted(&root, &image.workdir);
    std::fs::create_dir_all(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(image.user.0), Some(image.user.1)).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    for dir in data
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(&root))
    {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    // The image's `COPY --from=build … /usr/local/bin/callgate`: the test binary may live
    // where uid 65534 cannot reach (a checkout under /root), so it is copied like the image's.
    let binary = rooted(&root, "/usr/local/bin/callgate");
    std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_callgate"), &binary).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    for dir in binary
        .ancestors()
        .skip(1)
        .take_while(|d| d.starts_with(&root))
    {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new("setpriv");
    command
        .args([
            format!("--reuid={}", image.user.0),
            format!("--regid={}", image.user.1),
            "--clear-groups".into(),
            "--".into(),
            binary.to_string_lossy().into_owned(),
        ])
        .args(&image.cmd)
        .current_dir(&data)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in &image.env {
        let value = match value.starts_with('/') {
            true => rooted(&root, value).to_string_lossy().into_owned(),
            false => value.clone(),
        };
        command.env(key, value);
    }
    // What an operator adds: a port of our own, and (no auth configured here) consent to
    // unauthenticated routes on a public address.
    command
        .env("CALLGATE_LISTEN", format!("0.0.0.0:{port}"))
        .env("CALLGATE_SECURITY__ALLOW_UNAUTHENTICATED", "true");
    let mut gateway = command.spawn().expect("setpriv runs the gateway");

    let healthy = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        http_status(port, "/healthz") == Some(200)
    });
    let _ = gateway.kill();
    let output = gateway.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        healthy,
        "the gateway did not serve as uid {}: {stderr}",
        image.user.0
    );
    let db = rooted(&root, &image.env["CALLGATE_RECORDS__PATH"]);
    let meta = std::fs::metadata(&db).unwrap_or_else(|e| panic!("{}: {e}", db.display()));
    assert_eq!(
        meta.uid(),
        image.user.0,
        "records belong to the image's user"
    );
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "records are private"
    );
    assert!(db.starts_with(&data), "records live in the data directory");
    let _ = std::fs::remove_dir_all(&root);
}

fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.get(9..12)?.parse().ok()
}
