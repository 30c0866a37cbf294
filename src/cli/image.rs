//! `rafter image build-demo`: builds the images a new cluster needs on this
//! machine's Docker engine, with no registry: `rafter/demo` (an HTTP server
//! answering with its pod's name, from Debian's static busybox) and the pod
//! sandbox `rafter/pause`.

use rafter_nodeagent::docker::{DEMO_IMAGE, Docker};
use rafter_nodeagent::runtime::{ContainerRuntime, SANDBOX_IMAGE};

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build rafter/demo (busybox httpd on port 80) and rafter/pause locally.
    BuildDemo,
}

pub async fn run(command: ImageCommand) -> anyhow::Result<()> {
    match command {
        ImageCommand::BuildDemo => {
            let docker = Docker::connect().await?;
            docker.ensure_sandbox_image().await?;
            outln!("{SANDBOX_IMAGE} ready")?;
            docker.build_demo_image().await?;
            outln!(
                "{DEMO_IMAGE} ready: rafter create deployment web --image={DEMO_IMAGE} --port=80"
            )?;
            Ok(())
        }
    }
}
