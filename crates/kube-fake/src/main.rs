//! `wharf-kube-fake [--port N] [--token T] [--restricted-token T] [--rollout-delay-ms N] [--ready-nodes N] [--unready-nodes N] [--kubeconfig PATH] [--kubelet docker|unix:///PATH] [--taint KEY[=VALUE]:EFFECT]…`:
//! serves the Kubernetes API test double on 127.0.0.1 until killed, printing its kubeconfig
//! (and writing it to PATH when given).

use std::time::Duration;

use wharf_kube_fake::{KubeFake, Options};

fn usage() -> ! {
    eprintln!(
        "usage: wharf-kube-fake [--port N] [--token T] [--restricted-token T] [--rollout-delay-ms N] [--ready-nodes N] [--unready-nodes N] [--kubeconfig PATH] [--kubelet docker|unix:///PATH] [--taint KEY[=VALUE]:EFFECT]…"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut options = Options::default();
    let mut kubeconfig = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else { usage() };
        match arg.as_str() {
            "--port" => options.port = value.parse().unwrap_or_else(|_| usage()),
            "--token" => options.token = Some(value),
            "--restricted-token" => options.restricted_token = Some(value),
            "--rollout-delay-ms" => {
                options.rollout_delay = Duration::from_millis(value.parse().unwrap_or_else(|_| usage()))
            }
            "--ready-nodes" => options.ready_nodes = value.parse().unwrap_or_else(|_| usage()),
            "--unready-nodes" => options.unready_nodes = value.parse().unwrap_or_else(|_| usage()),
            "--kubeconfig" => kubeconfig = Some(value),
            "--kubelet" => options.kubelet = Some(value),
            "--taint" => match value.parse() {
                Ok(taint) => options.taints.push(taint),
                Err(e) => {
                    eprintln!("wharf-kube-fake: {e}");
                    std::process::exit(2)
                }
            },
            _ => usage(),
        }
    }
    let fake = match KubeFake::start(options).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    };
    if let Some(path) = kubeconfig {
        if let Err(e) = fake.write_kubeconfig(std::path::Path::new(&path)) {
            eprintln!("{e}");
            std::process::exit(1)
        }
        eprintln!("wharf-kube-fake: serving {}, kubeconfig written to {path}", fake.url());
    } else {
        eprintln!("wharf-kube-fake: serving {}", fake.url());
    }
    print!("{}", fake.kubeconfig());
    let _ = tokio::signal::ctrl_c().await;
}
