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
}

impl Devices {
    /// The configured rate for an exporter's domain, if devices.conf has one.
    pub fn configured_rate(&self, exporter: IpAddr, domain: u32) -> Option<u64> {
        let exporter = canonical(exporter);
        let exact = self.list.iter().find(|d| canonical(d.ip) == exporter && d.id == Some(domain));
        exact
            .or_else(|| self.list.iter().find(|d| canonical(d.ip) == exporter && d.id.is_none()))
            .map(|d| d.sampling_rate)
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
        let d = Devices {
            list: vec![
                Device { ip: "2.3.4.5".parse().unwrap(), id: None, sampling_rate: 1000 },
                Device { ip: "2.3.4.5".parse().unwrap(), id: Some(7), sampling_rate: 10 },
            ],
        };
        let ip: IpAddr = "2.3.4.5".parse().unwrap();
        assert_eq!(d.rate(ip, 7, None), 10);
        assert_eq!(d.rate(ip, 8, Some(64)), 1000, "devices.conf wins over the announced rate");
        assert_eq!(d.rate("::ffff:2.3.4.5".parse().unwrap(), 7, None), 10);
        assert_eq!(d.rate("9.9.9.9".parse().unwrap(), 0, Some(64)), 64);
        assert_eq!(d.rate("9.9.9.9".parse().unwrap(), 0, None), 1);
    }
}
