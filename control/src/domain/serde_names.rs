//! Serde glue for the router's validated names, which stay serde-free so the router keeps no
//! dependency it does not need. Deserializing re-validates, so a tampered database row cannot
//! smuggle an invalid name back in.

macro_rules! as_string {
    ($module:ident, $ty:ty, $parse:expr) => {
        pub(crate) mod $module {
            use serde::{Deserialize, Deserializer, Serializer};

            pub(crate) fn serialize<S: Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(v)
            }

            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let s = String::deserialize(d)?;
                $parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

as_string!(
    instance,
    kanmon_router::InstanceName,
    kanmon_router::InstanceName::parse
);
as_string!(zone, kanmon_router::Zone, kanmon_router::Zone::parse);
as_string!(version, kanmon_router::Version, |s: &str| {
    s.parse::<kanmon_router::Version>()
});
