//! From what the runtime reports to what the pod's status says: container
//! states (running / terminated / waiting with a reason such as
//! CrashLoopBackOff or ErrImageNeverPull), restart counts, readiness, the
//! pod's phase and conditions. Pure functions, so the rules are tested
//! without Docker.

use std::time::{Duration, SystemTime};

use rafter_proto::age::format_rfc3339_utc;
use rafter_proto::api;

use crate::runtime::{ContainerInfo, ContainerRunState};

/// Kubernetes' restart back-off: the first restart is immediate, then 10 s
/// doubling up to 5 min; a container that ran for 10 minutes starts over.
pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(600);

/// How long to wait after a container that has been restarted
/// `restart_count` times exited, having run for `ran_for`.
pub fn backoff(restart_count: u32, ran_for: Duration) -> Duration {
    if restart_count == 0 || ran_for >= BACKOFF_RESET_AFTER {
        return Duration::ZERO;
    }
    let shift = (restart_count - 1).min(16);
    (BACKOFF_INITIAL * (1u32 << shift)).min(BACKOFF_MAX)
}

/// Whether a container that exited with `exit_code` is restarted under the
/// pod's restartPolicy ("" means Always).
pub fn should_restart(policy: &str, exit_code: i64) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

fn time(t: Option<SystemTime>) -> String {
    t.map(format_rfc3339_utc).unwrap_or_default()
}

/// The terminated state of an exited container.
pub fn terminated(info: &ContainerInfo) -> Option<api::ContainerState> {
    match &info.state {
        ContainerRunState::Exited {
            exit_code,
            reason,
            started_at,
            finished_at,
        } => Some(api::ContainerState {
            terminated: Some(api::ContainerStateTerminated {
                exit_code: *exit_code as i32,
                reason: reason.clone(),
                started_at: time(*started_at),
                finished_at: time(*finished_at),
                container_id: format!("docker://{}", info.id),
                ..Default::default()
            }),
            ..Default::default()
        }),
        _ => None,
    }
}

/// A waiting state.
pub fn waiting(reason: &str, message: &str) -> api::ContainerState {
    api::ContainerState {
        waiting: Some(api::ContainerStateWaiting {
            reason: reason.into(),
            message: message.into(),
        }),
        ..Default::default()
    }
}

/// What the agent knows about one container of a pod.
#[derive(Debug, Clone, Default)]
pub struct ContainerView {
    /// The newest container of this name, if any.
    pub current: Option<ContainerInfo>,
    /// The one before it (its last state), if kept.
    pub previous: Option<ContainerInfo>,
    /// Why it is not running when the agent knows better than the runtime
    /// (CrashLoopBackOff, ErrImageNeverPull, CreateContainerConfigError).
    pub waiting: Option<(String, String)>,
    /// The readiness probe's verdict (true when there is none).
    pub ready: bool,
    pub restart_count: u32,
}

/// The status of container `spec` seen as `view`.
pub fn container_status(spec: &api::Container, view: &ContainerView) -> api::ContainerStatus {
    let mut status = api::ContainerStatus {
        name: spec.name.clone(),
        image: spec.image.clone(),
        restart_count: view.restart_count as i32,
        ..Default::default()
    };
    let last_of = |c: &Option<ContainerInfo>| c.as_ref().and_then(terminated);
    match (&view.waiting, &view.current) {
        (Some((reason, message)), current) => {
            status.state = Some(waiting(reason, message));
            status.last_state = last_of(current).or_else(|| last_of(&view.previous));
            status.started = Some(false);
        }
        (None, Some(c)) => {
            status.container_id = format!("docker://{}", c.id);
            status.image_id = c.image_id.clone();
            match &c.state {
                ContainerRunState::Running { started_at } => {
                    status.state = Some(api::ContainerState {
                        running: Some(api::ContainerStateRunning {
                            started_at: format_rfc3339_utc(*started_at),
                        }),
                        ..Default::default()
                    });
                    status.last_state = last_of(&view.previous);
                    status.ready = view.ready;
                    status.started = Some(true);
                }
                ContainerRunState::Exited { .. } => {
                    status.state = terminated(c);
                    status.last_state = last_of(&view.previous);
                    status.started = Some(false);
                }
                ContainerRunState::Created => {
                    status.state = Some(waiting("ContainerCreating", ""));
                    status.started = Some(false);
                }
            }
        }
        (None, None) => {
            status.state = Some(waiting("ContainerCreating", ""));
            status.started = Some(false);
        }
    }
    status
}

/// The pod's phase from its containers' statuses and restart policy.
pub fn phase(policy: &str, statuses: &[api::ContainerStatus]) -> &'static str {
    let running =
        |s: &api::ContainerStatus| s.state.as_ref().is_some_and(|st| st.running.is_some());
    let exit = |s: &api::ContainerStatus| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .map(|t| t.exit_code)
    };
    if statuses.is_empty() {
        return "Pending";
    }
    let all_terminated = statuses.iter().all(|s| exit(s).is_some());
    if all_terminated {
        let all_ok = statuses.iter().all(|s| exit(s) == Some(0));
        return match (policy, all_ok) {
            ("Never", true) | ("OnFailure", true) => "Succeeded",
            ("Never", false) => "Failed",
            _ => "Running",
        };
    }
    let started_once = |s: &api::ContainerStatus| {
        running(s)
            || exit(s).is_some()
            || s.restart_count > 0
            || s.last_state
                .as_ref()
                .is_some_and(|l| l.terminated.is_some())
    };
    if statuses.iter().all(started_once) {
        "Running"
    } else {
        "Pending"
    }
}

/// The phase of a pod whose containers were all stopped because it is being
/// deleted: Succeeded when every container exited 0, else Failed (a
/// container killed or never started), as Kubernetes' kubelet reports a
/// deleted pod whatever its restart policy.
pub fn stopped_phase(statuses: &[api::ContainerStatus]) -> &'static str {
    let exited_ok = |s: &api::ContainerStatus| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    };
    if !statuses.is_empty() && statuses.iter().all(exited_ok) {
        "Succeeded"
    } else {
        "Failed"
    }
}

/// Sets condition `kind` to `value`, keeping its transition time when it
/// does not change.
pub fn set_condition(
    conditions: &mut Vec<api::Condition>,
    previous: &[api::Condition],
    kind: &str,
    value: bool,
    reason: &str,
    now: &str,
) {
    let status = if value { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.r#type == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_string());
    conditions.push(api::Condition {
        r#type: kind.into(),
        status: status.into(),
        reason: if value { String::new() } else { reason.into() },
        last_transition_time: since,
        ..Default::default()
    });
}

/// The pod's whole status.
pub fn pod_status(
    pod: &api::Pod,
    views: &[ContainerView],
    pod_ip: &str,
    host_ip: &str,
    now: SystemTime,
) -> api::PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let previous = pod.status.clone().unwrap_or_default();
    let now_text = format_rfc3339_utc(now);
    let statuses: Vec<api::ContainerStatus> = spec
        .containers
        .iter()
        .zip(views)
        .map(|(c, v)| container_status(c, v))
        .collect();
    let all_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let mut conditions = Vec::new();
    let prev = &previous.conditions;
    set_condition(&mut conditions, prev, "PodScheduled", true, "", &now_text);
    set_condition(&mut conditions, prev, "Initialized", true, "", &now_text);
    set_condition(
        &mut conditions,
        prev,
        "ContainersReady",
        all_ready,
        "ContainersNotReady",
        &now_text,
    );
    set_condition(
        &mut conditions,
        prev,
        "Ready",
        all_ready,
        "ContainersNotReady",
        &now_text,
    );
    api::PodStatus {
        phase: phase(&spec.restart_policy, &statuses).into(),
        conditions,
        host_ip: host_ip.into(),
        pod_ip: pod_ip.into(),
        start_time: if previous.start_time.is_empty() {
            now_text
        } else {
            previous.start_time
        },
        container_statuses: statuses,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn info(state: ContainerRunState) -> ContainerInfo {
        ContainerInfo {
            id: "abc".into(),
            name: "c".into(),
            image: "i".into(),
            image_id: "sha256:1".into(),
            labels: BTreeMap::new(),
            state,
            ip: None,
        }
    }

    fn exited(code: i64) -> ContainerRunState {
        ContainerRunState::Exited {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            started_at: Some(SystemTime::UNIX_EPOCH),
            finished_at: Some(SystemTime::UNIX_EPOCH),
        }
    }

    #[test]
    fn back_off_is_immediate_then_doubles_from_ten_seconds_to_five_minutes() {
        let s = Duration::from_secs;
        assert_eq!(backoff(0, s(1)), s(0));
        assert_eq!(backoff(1, s(1)), s(10));
        assert_eq!(backoff(2, s(1)), s(20));
        assert_eq!(backoff(3, s(1)), s(40));
        assert_eq!(backoff(6, s(1)), s(300));
        assert_eq!(backoff(60, s(1)), s(300));
        assert_eq!(backoff(6, s(600)), s(0));
    }

    #[test]
    fn restart_policy_decides_who_comes_back() {
        assert!(should_restart("", 0));
        assert!(should_restart("Always", 0));
        assert!(should_restart("OnFailure", 1));
        assert!(!should_restart("OnFailure", 0));
        assert!(!should_restart("Never", 1));
    }

    #[test]
    fn a_crash_looping_container_waits_with_its_last_state() {
        let spec = api::Container {
            name: "c".into(),
            image: "i".into(),
            ..Default::default()
        };
        let view = ContainerView {
            current: Some(info(exited(3))),
            waiting: Some(("CrashLoopBackOff".into(), "back-off 10s".into())),
            restart_count: 2,
            ..Default::default()
        };
        let s = container_status(&spec, &view);
        assert_eq!(s.state.unwrap().waiting.unwrap().reason, "CrashLoopBackOff");
        assert_eq!(s.last_state.unwrap().terminated.unwrap().exit_code, 3);
        assert_eq!(s.restart_count, 2);
        assert!(!s.ready);
    }

    #[test]
    fn phases_follow_the_containers_and_the_policy() {
        let spec = api::Container {
            name: "c".into(),
            ..Default::default()
        };
        let running = container_status(
            &spec,
            &ContainerView {
                current: Some(info(ContainerRunState::Running {
                    started_at: SystemTime::UNIX_EPOCH,
                })),
                ready: true,
                ..Default::default()
            },
        );
        assert!(running.ready);
        let done = |code| {
            container_status(
                &spec,
                &ContainerView {
                    current: Some(info(exited(code))),
                    ..Default::default()
                },
            )
        };
        let creating = container_status(&spec, &ContainerView::default());
        assert_eq!(phase("Always", std::slice::from_ref(&running)), "Running");
        assert_eq!(phase("Always", std::slice::from_ref(&creating)), "Pending");
        assert_eq!(phase("Never", &[done(0)]), "Succeeded");
        assert_eq!(phase("Never", &[done(1)]), "Failed");
        assert_eq!(phase("OnFailure", &[done(0)]), "Succeeded");
        assert_eq!(phase("Always", &[done(0)]), "Running");
        assert_eq!(phase("Always", &[running, creating]), "Pending");
    }

    #[test]
    fn a_stopped_pod_succeeded_only_if_every_container_exited_zero() {
        let spec = api::Container {
            name: "c".into(),
            ..Default::default()
        };
        let done = |code| {
            container_status(
                &spec,
                &ContainerView {
                    current: Some(info(exited(code))),
                    ..Default::default()
                },
            )
        };
        let never_started = container_status(&spec, &ContainerView::default());
        assert_eq!(stopped_phase(&[done(0), done(0)]), "Succeeded");
        assert_eq!(stopped_phase(&[done(0), done(143)]), "Failed");
        assert_eq!(stopped_phase(&[done(0), never_started]), "Failed");
        assert_eq!(stopped_phase(&[]), "Failed");
    }

    #[test]
    fn the_pod_is_ready_when_every_container_is() {
        let pod = api::Pod {
            spec: Some(api::PodSpec {
                containers: vec![api::Container {
                    name: "c".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let view = ContainerView {
            current: Some(info(ContainerRunState::Running {
                started_at: SystemTime::UNIX_EPOCH,
            })),
            ready: true,
            ..Default::default()
        };
        let s = pod_status(
            &pod,
            std::slice::from_ref(&view),
            "10.244.1.2",
            "192.168.1.1",
            SystemTime::now(),
        );
        assert_eq!(s.phase, "Running");
        assert_eq!(s.pod_ip, "10.244.1.2");
        assert!(
            s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "True")
        );
        let not_ready = ContainerView {
            ready: false,
            ..view
        };
        let s = pod_status(
            &pod,
            &[not_ready],
            "10.244.1.2",
            "192.168.1.1",
            SystemTime::now(),
        );
        assert!(
            s.conditions
                .iter()
                .any(|c| c.r#type == "Ready" && c.status == "False")
        );
    }
}
