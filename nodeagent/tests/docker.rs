//! The Docker runtime against the real engine on this machine.
//!
//! These tests need a running Docker engine and FAIL (never skip) without
//! one. Nothing is pulled: they use only the images the runtime builds from
//! the node's static busybox (`apt-get install busybox-static`).
//!
//! Every container and network a test creates carries a label unique to the
//! test run, and a guard removes them by that label when the test ends,
//! panicking or not.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use rafter_nodeagent::docker::{DEMO_IMAGE, Docker};
use rafter_nodeagent::runtime::{
    ContainerConfig, ContainerRunState, ContainerRuntime, LABEL_CONTAINER, LABEL_POD_UID,
    LogOptions, NetworkAttachment, RuntimeError, SANDBOX, SANDBOX_IMAGE,
};

/// The label every test object carries; its value is unique per test.
const LABEL_TEST: &str = "io.rafter.test";

async fn connect() -> Docker {
    match Docker::connect().await {
        Ok(docker) => docker,
        Err(e) => {
            panic!("the Docker runtime tests need a running Docker engine and cannot reach it: {e}")
        }
    }
}

/// Builds the sandbox and demo images once per test binary: concurrent
/// builds of one tag would leave dangling duplicates behind.
async fn images(docker: &Docker) {
    static BUILT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    BUILT
        .get_or_init(|| async {
            docker
                .ensure_sandbox_image()
                .await
                .expect("building the sandbox image");
            docker
                .build_demo_image()
                .await
                .expect("building the demo image");
        })
        .await;
}

/// One test's Docker objects, removed on drop.
struct Fixture {
    docker: Docker,
    /// The value of [`LABEL_TEST`] on everything this test creates, and
    /// the prefix of their names.
    run: String,
    networks: Vec<String>,
}

impl Fixture {
    async fn new(test: &str) -> Fixture {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let docker = connect().await;
        images(&docker).await;
        Fixture {
            docker,
            run: format!("rt-{test}-{}-{:x}", std::process::id(), nanos % (1 << 40)),
            networks: Vec::new(),
        }
    }

    fn name(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.run)
    }

    /// A container config with the test label and no network.
    fn config(&self, suffix: &str, image: &str) -> ContainerConfig {
        ContainerConfig {
            name: self.name(suffix),
            image: image.to_string(),
            command: vec![],
            args: vec![],
            env: vec![],
            working_dir: String::new(),
            mounts: vec![],
            labels: BTreeMap::from([(LABEL_TEST.to_string(), self.run.clone())]),
            network: NetworkAttachment::None,
            hostname: String::new(),
            dns_servers: vec![],
            dns_search: vec![],
            cpu_millis: 0,
            memory_bytes: 0,
        }
    }

    /// Creates a pod network on a free 10.250.x.0/24 (parallel tests pick
    /// again when Docker reports an overlap) and returns its name and
    /// subnet.
    async fn network(&mut self) -> (String, ipnet::Ipv4Net) {
        let name = self.name("net");
        self.networks.push(name.clone());
        for _ in 0..20 {
            let octet: u8 = rand::random();
            let subnet: ipnet::Ipv4Net = format!("10.250.{octet}.0/24").parse().unwrap();
            let gateway = Ipv4Addr::new(10, 250, octet, 1);
            match self.docker.ensure_network(&name, subnet, gateway).await {
                Ok(()) => return (name, subnet),
                Err(e) if e.to_string().contains("overlap") => continue,
                Err(e) => panic!("creating network {name}: {e}"),
            }
        }
        panic!("found no free 10.250.x.0/24 subnet for network {name}");
    }

    async fn create_and_start(&self, config: &ContainerConfig) -> String {
        let id = self.docker.create(config).await.expect("create");
        self.docker.start(&id).await.expect("start");
        id
    }

    async fn logs(&self, id: &str) -> String {
        let mut stream = self
            .docker
            .logs(id, LogOptions::default())
            .await
            .expect("logs");
        let mut text = Vec::new();
        while let Some(chunk) = stream.next().await {
            text.extend_from_slice(&chunk.expect("log chunk"));
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // A fresh thread and runtime: the test's runtime may be unwinding,
        // and bollard's connections belong to the runtime that made them.
        let run = self.run.clone();
        let networks = std::mem::take(&mut self.networks);
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(docker) = Docker::connect().await else {
                    return;
                };
                if let Ok(containers) = docker.list(&[(LABEL_TEST, &run)]).await {
                    for c in containers {
                        let _ = docker.remove(&c.id).await;
                    }
                }
                for network in networks {
                    let _ = docker.client().remove_network(&network).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Polls `check` until it returns `Some`, failing after `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_exited(f: &Fixture, id: &str) -> ContainerRunState {
    eventually("the container to exit", Duration::from_secs(20), || async {
        let info = f.docker.inspect(id).await.expect("inspect");
        matches!(info.state, ContainerRunState::Exited { .. }).then_some(info.state)
    })
    .await
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn sandbox_and_app_container_share_an_ip_on_the_pod_network() {
    let mut f = Fixture::new("share").await;
    let (network, subnet) = f.network().await;
    // A second call with the same subnet is a no-op.
    f.docker
        .ensure_network(&network, subnet, subnet.hosts().next().unwrap())
        .await
        .expect("ensure_network is idempotent");

    let mut sandbox = f.config("sandbox", SANDBOX_IMAGE);
    sandbox.network = NetworkAttachment::PodNetwork {
        network: network.clone(),
    };
    sandbox.hostname = "web-0".into();
    sandbox.dns_servers = vec!["10.96.0.10".into()];
    sandbox.dns_search = vec!["default.svc.cluster.local".into()];
    sandbox
        .labels
        .insert(LABEL_CONTAINER.to_string(), SANDBOX.to_string());
    let sandbox_id = f.create_and_start(&sandbox).await;
    let info = f.docker.inspect(&sandbox_id).await.unwrap();
    assert!(matches!(info.state, ContainerRunState::Running { .. }));
    let ip = info.ip.expect("the sandbox has an IP on the pod network");
    assert!(subnet.contains(&ip), "{ip} is not in {subnet}");
    assert_eq!(info.name, sandbox.name);
    assert!(info.image_id.starts_with("sha256:"), "{}", info.image_id);

    let mut app = f.config("web", DEMO_IMAGE);
    app.network = NetworkAttachment::Container {
        id: sandbox_id.clone(),
    };
    // Ignored: the app container takes the sandbox's hostname and resolver.
    app.hostname = "ignored".into();
    app.dns_servers = vec!["10.96.0.10".into()];
    let app_id = f.create_and_start(&app).await;
    let app_info = f.docker.inspect(&app_id).await.unwrap();
    assert_eq!(
        app_info.ip, None,
        "the app container has no network of its own"
    );

    let wget = strings(&["wget", "-qO-", "http://127.0.0.1/"]);
    let body = eventually("the demo server to answer", Duration::from_secs(10), || {
        let (docker, app_id, wget) = (&f.docker, &app_id, &wget);
        async move {
            let out = docker
                .exec(app_id, wget, Duration::from_secs(5))
                .await
                .expect("exec");
            (out.exit_code == 0).then_some(out.stdout)
        }
    })
    .await;
    assert_eq!(String::from_utf8_lossy(&body), "web-0\n");

    // The sandbox answers on the same loopback: one network namespace.
    let from_sandbox = f
        .docker
        .exec(
            &sandbox_id,
            &strings(&["/bin/busybox", "wget", "-qO-", "http://127.0.0.1/"]),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&from_sandbox.stdout), "web-0\n");

    // httpd -v logs each request to stderr.
    let logs = f.logs(&app_id).await;
    assert!(logs.contains("response:200"), "logs: {logs:?}");

    for id in [&app_id, &sandbox_id] {
        f.docker.stop(id, Duration::from_secs(10)).await.unwrap();
        f.docker.remove(id).await.unwrap();
    }
}

#[tokio::test]
async fn ensure_network_refuses_an_existing_network_with_another_subnet() {
    let mut f = Fixture::new("subnet").await;
    let (network, subnet) = f.network().await;
    let other: ipnet::Ipv4Net = "10.251.0.0/24".parse().unwrap();
    let err = f
        .docker
        .ensure_network(&network, other, Ipv4Addr::new(10, 251, 0, 1))
        .await
        .expect_err("another subnet is an error");
    let text = err.to_string();
    assert!(
        text.contains(&subnet.to_string()) && text.contains(&other.to_string()),
        "{text}"
    );
    assert!(
        text.contains(&format!("docker network rm {network}")),
        "{text}"
    );
}

#[tokio::test]
async fn a_subnet_overlapping_another_network_is_reported() {
    let mut f = Fixture::new("overlap").await;
    let (_, subnet) = f.network().await;
    let second = f.name("net2");
    f.networks.push(second.clone());
    let err = f
        .docker
        .ensure_network(&second, subnet, subnet.hosts().next().unwrap())
        .await
        .expect_err("Docker refuses overlapping subnets");
    let text = err.to_string();
    assert!(matches!(err, RuntimeError::Engine { .. }), "{text}");
    assert!(text.contains(&second) && text.contains("overlap"), "{text}");
}

#[tokio::test]
async fn a_missing_image_is_reported_not_pulled() {
    let f = Fixture::new("missing").await;
    let image = format!("rafter/{}", f.name("absent"));
    assert!(!f.docker.image_present(&image).await.unwrap());
    assert!(f.docker.image_present(SANDBOX_IMAGE).await.unwrap());
    // "rafter/pause" without a tag means ":latest", as for Docker.
    assert!(f.docker.image_present("rafter/pause").await.unwrap());

    let err = f
        .docker
        .create(&f.config("c", &image))
        .await
        .expect_err("creating from a missing image fails");
    assert!(
        matches!(&err, RuntimeError::ImageNotPresent { image: i } if *i == image),
        "{err}"
    );
    assert!(!f.docker.image_present(&image).await.unwrap(), "not pulled");
    assert!(
        f.docker
            .list(&[(LABEL_TEST, &f.run)])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_exited_container_reports_its_exit_code() {
    let f = Fixture::new("exit").await;
    let mut failing = f.config("failing", DEMO_IMAGE);
    failing.command = strings(&["/bin/sh", "-c"]);
    failing.args = strings(&["echo about to fail; exit 3"]);
    let id = f.docker.create(&failing).await.unwrap();
    assert_eq!(
        f.docker.inspect(&id).await.unwrap().state,
        ContainerRunState::Created
    );
    f.docker.start(&id).await.unwrap();
    match wait_exited(&f, &id).await {
        ContainerRunState::Exited {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => {
            assert_eq!((exit_code, reason.as_str()), (3, "Error"));
            // Both times are recent. (Their order is not checked: for a
            // container that exits at once Docker can record FinishedAt a
            // moment before StartedAt.)
            for t in [started_at.unwrap(), finished_at.unwrap()] {
                let age = SystemTime::now().duration_since(t).unwrap_or_default();
                assert!(age < Duration::from_secs(120), "{age:?} ago");
            }
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(f.logs(&id).await, "about to fail\n");

    let mut done = f.config("done", DEMO_IMAGE);
    done.command = strings(&["/bin/sh", "-c", "exit 0"]);
    let id = f.create_and_start(&done).await;
    match wait_exited(&f, &id).await {
        ContainerRunState::Exited {
            exit_code, reason, ..
        } => assert_eq!((exit_code, reason.as_str()), (0, "Completed")),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn stop_sends_sigterm_then_kills_after_the_grace_period() {
    let f = Fixture::new("stop").await;
    // Ignores SIGTERM (only logs it), so only SIGKILL ends it.
    let mut stubborn = f.config("stubborn", DEMO_IMAGE);
    stubborn.command = strings(&[
        "/bin/sh",
        "-c",
        "trap 'echo got TERM' TERM; echo ready; while :; do sleep 1 & wait; done",
    ]);
    let id = f.create_and_start(&stubborn).await;
    eventually("the trap to be installed", Duration::from_secs(10), || {
        let f = &f;
        let id = &id;
        async move { f.logs(id).await.contains("ready").then_some(()) }
    })
    .await;
    let started = Instant::now();
    f.docker.stop(&id, Duration::from_secs(2)).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "stopped after {took:?}"
    );
    match f.docker.inspect(&id).await.unwrap().state {
        ContainerRunState::Exited {
            exit_code, reason, ..
        } => assert_eq!((exit_code, reason.as_str()), (137, "Error")),
        other => panic!("{other:?}"),
    }
    assert!(f.logs(&id).await.contains("got TERM"));
    // Stopping a stopped container is not an error.
    f.docker.stop(&id, Duration::from_secs(2)).await.unwrap();

    // The sandbox exits 0 on SIGTERM at once, long before its grace period.
    let sandbox_id = f
        .create_and_start(&f.config("sandbox", SANDBOX_IMAGE))
        .await;
    let started = Instant::now();
    f.docker
        .stop(&sandbox_id, Duration::from_secs(30))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "stopped after {took:?}");
    match f.docker.inspect(&sandbox_id).await.unwrap().state {
        ContainerRunState::Exited { exit_code, .. } => assert_eq!(exit_code, 0),
        other => panic!("{other:?}"),
    }

    // Removing twice is fine; stopping or inspecting a removed one is NotFound.
    f.docker.remove(&id).await.unwrap();
    f.docker.remove(&id).await.unwrap();
    assert!(matches!(
        f.docker.stop(&id, Duration::from_secs(1)).await,
        Err(RuntimeError::NotFound { .. })
    ));
    assert!(matches!(
        f.docker.inspect(&id).await,
        Err(RuntimeError::NotFound { .. })
    ));
}

#[tokio::test]
async fn list_finds_containers_by_label() {
    let f = Fixture::new("list").await;
    let mut ids = BTreeMap::new();
    for (suffix, uid) in [("a1", "pod-a"), ("a2", "pod-a"), ("b1", "pod-b")] {
        let mut config = f.config(suffix, SANDBOX_IMAGE);
        config
            .labels
            .insert(LABEL_POD_UID.to_string(), uid.to_string());
        ids.insert(suffix, f.docker.create(&config).await.unwrap());
    }
    f.docker.start(&ids["a1"]).await.unwrap();

    let mut pod_a = f
        .docker
        .list(&[(LABEL_TEST, &f.run), (LABEL_POD_UID, "pod-a")])
        .await
        .unwrap();
    pod_a.sort_by(|x, y| x.name.cmp(&y.name));
    let names: Vec<&str> = pod_a.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [f.name("a1"), f.name("a2")]);
    assert!(matches!(pod_a[0].state, ContainerRunState::Running { .. }));
    assert_eq!(pod_a[1].state, ContainerRunState::Created);
    assert_eq!(pod_a[0].labels[LABEL_POD_UID], "pod-a");
    assert_eq!(pod_a[0].image, SANDBOX_IMAGE);

    assert_eq!(
        f.docker.list(&[(LABEL_TEST, &f.run)]).await.unwrap().len(),
        3
    );
    assert!(
        f.docker
            .list(&[(LABEL_TEST, &f.run), (LABEL_POD_UID, "pod-c")])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn exec_returns_output_and_exit_code_and_honours_its_timeout() {
    let f = Fixture::new("exec").await;
    let id = f.create_and_start(&f.config("web", DEMO_IMAGE)).await;
    let out = f
        .docker
        .exec(
            &id,
            &strings(&["sh", "-c", "echo out; echo err >&2; exit 4"]),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(out.exit_code, 4);
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");

    let started = Instant::now();
    let err = f
        .docker
        .exec(&id, &strings(&["sleep", "30"]), Duration::from_millis(500))
        .await
        .expect_err("the exec times out");
    assert!(err.to_string().contains("timed out after"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));

    assert!(matches!(
        f.docker
            .exec(
                &f.name("nonexistent"),
                &strings(&["true"]),
                Duration::from_secs(5)
            )
            .await,
        Err(RuntimeError::NotFound { .. })
    ));
}

#[tokio::test]
async fn version_names_the_engine() {
    let docker = connect().await;
    let version = docker.version().await.unwrap();
    assert!(version.starts_with("docker://"), "{version}");
    assert!(version.len() > "docker://".len(), "{version}");
}

#[tokio::test]
async fn a_missing_socket_is_reported_as_unavailable() {
    let err = Docker::connect_socket(std::path::Path::new("/nonexistent/docker.sock"))
        .await
        .err()
        .expect("no engine listens there");
    assert!(matches!(err, RuntimeError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string().contains("is the Docker engine running?"),
        "{err}"
    );
}
