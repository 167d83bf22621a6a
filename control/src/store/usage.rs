//! Billing state: each deployment's [`Meter`] and the days it settled.

use rusqlite::{params, OptionalExtension};

use super::{decode, encode, Store, StoreError};
use crate::domain::billing::{Meter, Tier, UsageDay};

impl Store {
    /// The deployment's meter (a fresh one before its first sample).
    pub fn meter(&self, instance: &str) -> Result<Meter, StoreError> {
        let body: Option<String> = self
            .conn()
            .query_row(
                "SELECT body FROM meters WHERE instance = ?1",
                params![instance],
                |r| r.get(0),
            )
            .optional()?;
        body.map_or(Ok(Meter::default()), |b| decode("meter", &b))
    }

    /// Saves the meter and the days it settled in one transaction, so a day is recorded
    /// exactly once even if the process dies between the two.
    pub fn save_meter(
        &self,
        instance: &str,
        meter: &Meter,
        settled: &[UsageDay],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO meters (instance, body) VALUES (?1, ?2)
             ON CONFLICT(instance) DO UPDATE SET body = excluded.body",
            params![instance, encode(meter)],
        )?;
        for d in settled {
            tx.execute(
                "INSERT OR REPLACE INTO usage_days (instance, day, node_cpus, db_cpus, samples)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    instance,
                    d.day as i64,
                    d.tier.node_cpus,
                    d.tier.db_cpus,
                    d.samples
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Settled days of `instance` from day `from` to day `to`, both included, oldest first.
    pub fn usage(&self, instance: &str, from: u64, to: u64) -> Result<Vec<UsageDay>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT day, node_cpus, db_cpus, samples FROM usage_days
             WHERE instance = ?1 AND day >= ?2 AND day <= ?3 ORDER BY day",
        )?;
        let rows = stmt.query_map(
            params![
                instance,
                from.min(i64::MAX as u64) as i64,
                to.min(i64::MAX as u64) as i64
            ],
            |r| {
                Ok(UsageDay {
                    day: r.get::<_, i64>(0)? as u64,
                    tier: Tier {
                        node_cpus: r.get(1)?,
                        db_cpus: r.get(2)?,
                    },
                    samples: r.get(3)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        domain::{
            billing::{Tier, DAY_MS},
            Timestamp,
        },
        store::Store,
    };

    #[test]
    fn settled_days_and_the_meter_survive_in_the_store() {
        let store = Store::in_memory().unwrap();
        let mut m = store.meter("alpha").unwrap();
        let tier = |n| Tier {
            node_cpus: n,
            db_cpus: 1,
        };
        m.sample(Timestamp(3 * DAY_MS + 5), tier(2));
        store.save_meter("alpha", &m, &[]).unwrap();
        let mut m = store.meter("alpha").unwrap();
        let settled = m.sample(Timestamp(5 * DAY_MS + 5), tier(1));
        store.save_meter("alpha", &m, &settled).unwrap();
        let days = store.usage("alpha", 0, 10).unwrap();
        let got: Vec<(u64, u32, u32)> = days
            .iter()
            .map(|d| (d.day, d.tier.node_cpus, d.samples))
            .collect();
        assert_eq!(got, [(3, 2, 1), (4, 2, 0)]);
        assert_eq!(store.usage("alpha", 4, 4).unwrap().len(), 1);
        assert_eq!(store.meter("alpha").unwrap(), m);
    }
}
