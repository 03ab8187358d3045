//! Least privilege on the gateway: the agent's files and control socket keep their modes whatever
//! the umask, the socket admits only root, the agent's user and its group (checked by credentials,
//! not only by file modes), and files holding credentials that others can read are reported.
//!
//! Needs root (to run the CLI as other users with `setpriv`); ignored, with that reason, otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use millwright_tests::{eventually, millwright_bin, run_to_end, AgentProcess};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `millwright alerts -c config` as another user and group (no supplementary groups).
async fn alerts_as(config: &Path, uid: u32, gid: u32) -> (bool, String) {
    let mut command = tokio::process::Command::new("setpriv");
    command
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
        ])
        .arg(millwright_bin())
        .args(["alerts", "-c"])
        .arg(config);
    run_to_end(command).await
}

millwright_tests::needs! { root
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modes_hold_under_any_umask_and_the_socket_refuses_other_users() {
    // A closed port: the device is down at once, so an alert (and alerts.json) appears.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    for umask in ["000", "027"] {
        let dir = tempfile::tempdir().expect("tempdir");
        // Other users must reach the configuration to run the CLI at all.
        chmod(dir.path(), 0o755);
        let data = dir.path().join("data");
        let config = dir.path().join("plant.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\ndata_dir = {data:?}\n[alerts]\ndevice_down_after = \"1s\"\n\
                 [[devices]]\nname = \"plc\"\nhost = \"127.0.0.1\"\nport = {closed}\naddressing = \"zero_based\"\n\
                 [[devices.tags]]\nname = \"t\"\ntable = \"holding\"\naddress = 0\n"
            ),
        )
        .expect("config");
        chmod(&config, 0o644);
        let mut command = tokio::process::Command::new("sh");
        command.arg("-c").arg(format!(
            "umask {umask}; exec {:?} run -c {:?} --log-format json",
            millwright_bin(),
            config
        ));
        let mut agent = AgentProcess::spawn_command(command);
        let book = data.join("alerts.json");
        eventually(Duration::from_secs(15), || async {
            book.exists().then_some(()).ok_or(())
        })
        .await
        .unwrap_or_else(|()| panic!("umask {umask}: no alert saved\n{}", agent.log.transcript()));

        assert_eq!(mode(&data), 0o750, "umask {umask}: data_dir");
        assert_eq!(mode(&book), 0o640, "umask {umask}: alerts.json");
        assert_eq!(
            mode(&data.join("control.sock")),
            0o660,
            "umask {umask}: socket"
        );
        assert!(
            agent
                .log
                .wait_for(Duration::from_secs(5), |l| l
                    .contains("readable by every user (mode 0644)"))
                .await
                .is_some(),
            "umask {umask}: the readable configuration is reported at start\n{}",
            agent.log.transcript()
        );

        // Another user cannot reach the socket; a member of the agent's group can.
        let (ok, said) = alerts_as(&config, 65534, 65534).await;
        assert!(
            !ok && said.contains("no agent answers"),
            "umask {umask}: {said}"
        );
        let (ok, said) = alerts_as(&config, 65534, 0).await;
        assert!(
            ok && said.contains("agent/device/plc"),
            "umask {umask}: {said}"
        );

        // Even with every mode opened up, the credentials check refuses the stranger.
        chmod(&data, 0o777);
        chmod(&data.join("control.sock"), 0o666);
        let (ok, said) = alerts_as(&config, 65534, 65534).await;
        assert!(
            !ok && said
                .contains("not allowed: only root, the agent's user and members of its group"),
            "umask {umask}: {said}"
        );
        agent.terminate().await;
    }
}
}
