//! Connecting to the cluster: a kubeconfig file, or (without one) what kube infers — the
//! in-cluster service account when the control plane runs as a pod, `$KUBECONFIG` otherwise.

use std::path::Path;

use kube::{
    config::{KubeConfigOptions, Kubeconfig, KubeconfigError},
    Client,
};

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Cause.
        #[source]
        source: KubeconfigError,
    },
    /// Neither in-cluster credentials nor a default kubeconfig were found.
    #[error("no in-cluster credentials and no kubeconfig: {0}")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built (TLS set-up).
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// A client from `kubeconfig`, or inferred when `None`.
pub async fn connect(kubeconfig: Option<&Path>) -> Result<Client, ClientError> {
    let config = match kubeconfig {
        None => kube::Config::infer().await.map_err(ClientError::Infer)?,
        Some(path) => {
            let err = |source| ClientError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = Kubeconfig::read_from(path).map_err(err)?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(err)?
        }
    };
    Client::try_from(config).map_err(ClientError::Client)
}
