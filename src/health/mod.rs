//! How perch tells others it is alive and well: the systemd notification protocol and its watchdog.

pub mod systemd;
