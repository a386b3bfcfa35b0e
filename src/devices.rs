//! Per-exporter settings from `devices.conf`: the sampling rate by which octets and packets of
//! every flow of an exporter are multiplied.
//!
//! The most specific entry wins: exporter address plus source id / observation domain, then the
//! address alone. When devices.conf says nothing about an exporter, the rate the exporter
//! announces itself (options template or v5 header) is used, and 1 when there is none.

use std::net::IpAddr;

/// One `devices.conf` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub ip: IpAddr,
    /// Source id / observation domain; `None` matches every id of the address.
    pub id: Option<u32>,
    pub sampling_rate: u64,
}

/// All configured devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    pub list: Vec<Device>,
    /// The rates by canonical address and id (`None`: every id), the first entry of each
    /// pair: the rate is looked up for every data set, and an ISP lists hundreds of routers.
    by_key: foldhash::HashMap<(IpAddr, Option<u32>), u64>,
}

impl Devices {
    pub fn new(list: Vec<Device>) -> Devices {
        let mut by_key = foldhash::HashMap::with_capacity_and_hasher(list.len(), Default::default());
        for d in &list {
            by_key.entry((canonical(d.ip), d.id)).or_insert(d.sampling_rate);
        }
        Devices { list, by_key }
    }

    /// The configured rate for an exporter's domain, if devices.conf has one.
    pub fn configured_rate(&self, exporter: IpAddr, domain: u32) -> Option<u64> {
        let exporter = canonical(exporter);
        self.by_key.get(&(exporter, Some(domain))).or_else(|| self.by_key.get(&(exporter, None))).copied()
    }

    /// The rate to apply: devices.conf first, then the announced rate, then 1.
    pub fn rate(&self, exporter: IpAddr, domain: u32, announced: Option<u64>) -> u64 {
        self.configured_rate(exporter, domain)
            .or(announced)
            .filter(|&r| r > 0)
            .unwrap_or(1)
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) compare equal to their IPv4 form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_specific_entry_wins() {
        let d = Devices::new(vec![
            Device { ip: "2.3.4.5".parse().unwrap(), id: None, sampling_rate: 1000 },
            Device { ip: "2.3.4.5".parse().unwrap(), id: Some(7), sampling_rate: 10 },
            // Listed again: the first entry stays.
            Device { ip: "2.3.4.5".parse().unwrap(), id: Some(7), sampling_rate: 20 },
            // Written IPv4-mapped: the same exporter as its IPv4 form.
            Device { ip: "::ffff:3.3.3.3".parse().unwrap(), id: None, sampling_rate: 5 },
        ]);
        let ip: IpAddr = "2.3.4.5".parse().unwrap();
        assert_eq!(d.rate(ip, 7, None), 10);
        assert_eq!(d.rate("3.3.3.3".parse().unwrap(), 1, None), 5);
        assert_eq!(d.rate(ip, 8, Some(64)), 1000, "devices.conf wins over the announced rate");
        assert_eq!(d.rate("::ffff:2.3.4.5".parse().unwrap(), 7, None), 10);
        assert_eq!(d.rate("9.9.9.9".parse().unwrap(), 0, Some(64)), 64);
        assert_eq!(d.rate("9.9.9.9".parse().unwrap(), 0, None), 1);
    }
}
