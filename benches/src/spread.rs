//! `--spread N`: a load's WebSockets spread over N deployments of one zone, so one proxy is
//! measured holding a fleet's worth of hostnames rather than one deployment's (issue 17: KiB
//! per idle connection must not grow with the deployment count).
//!
//! Naming: the URL's host `alpha.us-east1.kanmon.test` gives the instance, zone and base;
//! deployment `k` (0 ≤ k < N) is `alpha-k.us-east1.kanmon.test` — the URL's instance with `-k`
//! appended, so the names stay valid instance names (DESIGN.md, "Names") and `compare.sh`'s
//! nodes file can name the same ones. The i-th WebSocket a target opens goes to deployment
//! `i mod N`, its hostname as SNI and `Host`: each deployment gets n/N of the connections
//! (±1) whatever order they finish in.

use std::sync::atomic::{AtomicUsize, Ordering};

use kanmon_router::{InstanceName, NameError};

/// Why `--spread` cannot be used with a URL.
#[derive(Debug, thiserror::Error)]
pub enum SpreadError {
    /// `--spread 0`.
    #[error("--spread must be at least 1 (the number of deployments to spread over)")]
    Zero,
    /// The generated deployment names would not be instance names (an IP address as the
    /// URL's host, an instance too long for the suffix, …).
    #[error(
        "--spread {count}: deployment name {name:?} (from the URL's host) is not an instance name"
    )]
    Name {
        /// The `--spread` value.
        count: usize,
        /// The longest generated name, which failed.
        name: String,
        /// The rule it breaks.
        #[source]
        source: NameError,
    },
}

/// N deployment hostnames derived from one URL host, handed out round-robin.
#[derive(Debug)]
pub struct Spread {
    count: usize,
    /// The URL's first label (`alpha`).
    instance: String,
    /// Everything after it, with its leading dot (`.us-east1.kanmon.test`).
    rest: String,
    /// How many hostnames were handed out so far.
    next: AtomicUsize,
}

impl Spread {
    /// The `count` deployments derived from `url_host` (lower-case, as [`crate::target::Target`]
    /// keeps it). Every name is checked here, once: the longest (`k = count - 1`) is valid iff
    /// all are, so no dial can fail on a name later.
    pub fn new(url_host: &str, count: usize) -> Result<Self, SpreadError> {
        if count == 0 {
            return Err(SpreadError::Zero);
        }
        let (instance, rest) = match url_host.find('.') {
            Some(dot) => url_host.split_at(dot),
            None => (url_host, ""),
        };
        let spread = Self {
            count,
            instance: instance.to_owned(),
            rest: rest.to_owned(),
            next: AtomicUsize::new(0),
        };
        let longest = spread.instance_name(count - 1);
        InstanceName::parse(&longest).map_err(|source| SpreadError::Name {
            count,
            name: longest,
            source,
        })?;
        Ok(spread)
    }

    /// How many deployments.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The instance name of deployment `k mod N` (`alpha-7`).
    pub fn instance_name(&self, k: usize) -> String {
        format!("{}-{}", self.instance, k % self.count)
    }

    /// The hostname of deployment `k mod N` (`alpha-7.us-east1.kanmon.test`).
    pub fn host(&self, k: usize) -> String {
        format!("{}-{}{}", self.instance, k % self.count, self.rest)
    }

    /// The hostname for the next connection: the i-th call gets deployment `i mod N`.
    pub fn next_host(&self) -> String {
        self.host(self.next.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn names_deployment_k_after_the_url_instance_in_its_zone() {
        let s = Spread::new("alpha.us-east1.kanmon.test", 1000).unwrap();
        assert_eq!(s.count(), 1000);
        assert_eq!(s.host(0), "alpha-0.us-east1.kanmon.test");
        assert_eq!(s.host(999), "alpha-999.us-east1.kanmon.test");
        assert_eq!(s.host(1000), "alpha-0.us-east1.kanmon.test", "k wraps at N");
        assert_eq!(s.instance_name(1234), "alpha-234");
        // Every generated name is a hostname the proxy splits into this instance and zone.
        let (instance, zone) = kanmon_router::parse_hostname(&s.host(42), "kanmon.test").unwrap();
        assert_eq!((instance.as_str(), zone.as_str()), ("alpha-42", "us-east1"));
        // A host without dots keeps working as a plain name.
        assert_eq!(Spread::new("fleet", 2).unwrap().host(1), "fleet-1");
    }

    #[test]
    fn hands_out_each_deployment_in_turn_and_evenly() {
        let s = Spread::new("alpha.us-east1.kanmon.test", 3).unwrap();
        let first: Vec<String> = (0..4).map(|_| s.next_host()).collect();
        assert_eq!(
            first,
            [
                "alpha-0.us-east1.kanmon.test",
                "alpha-1.us-east1.kanmon.test",
                "alpha-2.us-east1.kanmon.test",
                "alpha-0.us-east1.kanmon.test",
            ]
        );
        let s = Spread::new("alpha.us-east1.kanmon.test", 7).unwrap();
        let mut per_host: HashMap<String, usize> = HashMap::new();
        for _ in 0..100 {
            *per_host.entry(s.next_host()).or_default() += 1;
        }
        assert_eq!(per_host.len(), 7);
        assert!(
            per_host.values().all(|&n| n == 14 || n == 15),
            "{per_host:?}"
        );
    }

    #[test]
    fn refuses_zero_and_names_that_are_no_instance() {
        assert!(matches!(
            Spread::new("alpha.us-east1.kanmon.test", 0),
            Err(SpreadError::Zero)
        ));
        // An IP address as the URL's host: `127-0` is no instance name.
        let e = Spread::new("127.0.0.1", 2).unwrap_err();
        assert!(
            matches!(&e, SpreadError::Name { name, .. } if name == "127-1"),
            "{e}"
        );
        // 59 characters of instance plus `-999` fill the 63 of a label; `-1000` is one too many.
        let long = format!("{}.us-east1.kanmon.test", "a".repeat(59));
        assert!(Spread::new(&long, 1000).is_ok());
        let e = Spread::new(&long, 1001).unwrap_err();
        assert!(e.to_string().contains("--spread 1001"), "{e}");
    }
}
