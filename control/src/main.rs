//! `kanmon`: the control plane server (`kanmon serve`) and its CLI client.

use std::{path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Parser;
use kanmon_control::{
    api,
    bootstrap::bootstrap_admin,
    cli::{self, Cli, Command, ServeArgs},
    domain::Timings,
    driver::{LoopbackDriver, NodeStatePublisher, NodesFilePublisher, NullPublisher},
    runtime::{Runtime, Settings},
    store::Store,
};

fn main() -> anyhow::Result<()> {
    let args = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match args.command {
            Command::Serve(serve_args) => serve(serve_args).await,
            command => {
                let out = cli::run(&args.conn, command).await?;
                println!("{out}");
                Ok(())
            }
        }
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store =
        Arc::new(Store::open(&args.db).with_context(|| format!("opening {}", args.db.display()))?);
    let token_file = args.admin_token_file.clone().unwrap_or_else(|| {
        let mut p = args.db.clone().into_os_string();
        p.push(".admin-token");
        PathBuf::from(p)
    });
    if let Some(token) = bootstrap_admin(&store, &token_file)? {
        println!("admin token written to {}", token_file.display());
        println!("admin token: {token}");
    }
    let publisher: Arc<dyn NodeStatePublisher> = match &args.nodes_file {
        Some(path) => Arc::new(NodesFilePublisher::new(path)),
        None => Arc::new(NullPublisher),
    };
    let settings = Settings {
        base_domain: args.base_domain.clone(),
        timings: Timings {
            grace: args.grace,
            health_timeout: args.health_timeout,
            crashloop_timeout: args.crashloop_timeout,
            backoff_base: args.backoff_base,
            backoff_cap: args.backoff_cap,
        },
        ..Settings::default()
    };
    let runtime = Runtime::start(store, settings, Arc::new(LoopbackDriver::new()), publisher)?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    // Tests and scripts read this line to learn the port when --listen used port 0.
    println!("listening on {}", listener.local_addr()?);
    tracing::info!(db = %args.db.display(), "control plane serving");
    api::serve(listener, runtime).await?;
    Ok(())
}
