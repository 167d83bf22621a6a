//! Permissions and grants: who may do what, at which level.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One permission. Kept deliberately coarse: each maps to a kind of action an operator
/// recognises, and the 403 body names it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Read deployments, operations, audit.
    View,
    /// Create deployments, change settings, vars and config.
    Edit,
    /// Deploy new versions and reboot.
    Deploy,
    /// Delete deployments.
    Delete,
    /// Export a deployment.
    Export,
    /// Change CPUs / node count.
    Scale,
    /// Read keys and secret config.
    Secrets,
    /// Read CPU usage records (what is billed): organization admins.
    Billing,
}

impl Permission {
    /// Every permission.
    pub const ALL: [Permission; 8] = [
        Self::View,
        Self::Edit,
        Self::Deploy,
        Self::Delete,
        Self::Export,
        Self::Scale,
        Self::Secrets,
        Self::Billing,
    ];

    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::Edit => "edit",
            Self::Deploy => "deploy",
            Self::Delete => "delete",
            Self::Export => "export",
            Self::Scale => "scale",
            Self::Secrets => "secrets",
            Self::Billing => "billing",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown permission {s:?}"))
    }
}

/// A set of permissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct PermissionSet(u8);

impl PermissionSet {
    /// Every permission.
    pub fn all() -> Self {
        Self::from_iter(Permission::ALL)
    }
    /// Whether `p` is in the set.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }
    /// The permissions in the set.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |acc, p| acc | p.bit()))
    }
}

impl Serialize for PermissionSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

impl<'de> Deserialize<'de> for PermissionSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<Permission>::deserialize(d)?.into_iter().collect())
    }
}

/// Where a grant applies. `org = "*"` at organization level means every organization (the
/// bootstrap admin's grant).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(tag = "level", rename_all = "lowercase")]
pub enum Scope {
    /// Every title and deployment of an organization.
    Organization {
        /// Organization, or `*`.
        org: String,
    },
    /// Every deployment of a title.
    Title {
        /// Organization.
        org: String,
        /// Title.
        title: String,
    },
    /// One deployment.
    Deployment {
        /// Instance name.
        instance: String,
    },
}

impl Scope {
    /// 0 = organization, 1 = title, 2 = deployment: higher is more specific.
    fn specificity(&self) -> u8 {
        match self {
            Self::Organization { .. } => 0,
            Self::Title { .. } => 1,
            Self::Deployment { .. } => 2,
        }
    }

    fn covers(&self, target: &Target<'_>) -> bool {
        match self {
            Self::Organization { org } => org == "*" || org == target.org,
            Self::Title { org, title } => org == target.org && Some(title.as_str()) == target.title,
            Self::Deployment { instance } => Some(instance.as_str()) == target.instance,
        }
    }
}

/// A user's permissions at one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Grant {
    /// User name.
    pub user: String,
    /// Where it applies.
    pub scope: Scope,
    /// What it allows.
    #[schema(value_type = Vec<Permission>)]
    pub permissions: PermissionSet,
}

/// What a request acts on: a deployment (all three parts), or a title / organization when
/// creating or listing.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Organization.
    pub org: &'a str,
    /// Title, when known.
    pub title: Option<&'a str>,
    /// Instance, when acting on a deployment.
    pub instance: Option<&'a str>,
}

/// The effective permissions of `user` on `target`: the grants at the most specific level that
/// has any grant for the user win outright (several grants at that level are unioned). That
/// lets a deployment-level grant narrow what an organization-wide grant allows.
pub fn effective(grants: &[Grant], user: &str, target: &Target<'_>) -> PermissionSet {
    let matching = grants
        .iter()
        .filter(|g| g.user == user && g.scope.covers(target));
    let Some(level) = matching.clone().map(|g| g.scope.specificity()).max() else {
        return PermissionSet::default();
    };
    matching
        .filter(|g| g.scope.specificity() == level)
        .flat_map(|g| g.permissions.iter())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(user: &str, scope: Scope, perms: &[Permission]) -> Grant {
        Grant {
            user: user.into(),
            scope,
            permissions: perms.iter().copied().collect(),
        }
    }

    #[test]
    fn most_specific_level_wins() {
        use Permission::*;
        let grants = vec![
            g(
                "ann",
                Scope::Organization { org: "acme".into() },
                &Permission::ALL,
            ),
            g(
                "ann",
                Scope::Deployment {
                    instance: "alpha".into(),
                },
                &[View],
            ),
            g(
                "ann",
                Scope::Title {
                    org: "acme".into(),
                    title: "rpg".into(),
                },
                &[View, Deploy],
            ),
            g("bob", Scope::Organization { org: "*".into() }, &[View]),
        ];
        let t = |i| Target {
            org: "acme",
            title: Some("rpg"),
            instance: Some(i),
        };
        let alpha = effective(&grants, "ann", &t("alpha"));
        assert!(alpha.contains(View) && !alpha.contains(Deploy) && !alpha.contains(Secrets));
        let beta = effective(&grants, "ann", &t("beta"));
        assert!(beta.contains(Deploy) && !beta.contains(Delete));
        let other_title = Target {
            org: "acme",
            title: Some("fps"),
            instance: Some("gamma"),
        };
        assert_eq!(
            effective(&grants, "ann", &other_title),
            PermissionSet::all()
        );
        assert_eq!(
            effective(&grants, "bob", &t("alpha"))
                .iter()
                .collect::<Vec<_>>(),
            vec![View]
        );
        assert_eq!(
            effective(&grants, "eve", &t("alpha")),
            PermissionSet::default()
        );
        let other_org = Target {
            org: "zeta",
            title: None,
            instance: None,
        };
        assert_eq!(
            effective(&grants, "ann", &other_org),
            PermissionSet::default()
        );
    }

    #[test]
    fn set_serde_round_trip() {
        let s: PermissionSet = [Permission::View, Permission::Secrets]
            .into_iter()
            .collect();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"["view","secrets"]"#);
        assert_eq!(serde_json::from_str::<PermissionSet>(&json).unwrap(), s);
    }
}
