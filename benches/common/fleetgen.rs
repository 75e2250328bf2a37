//! Generates large fleets for benchmarks: `files` node files, rollout
//! groups, depends_on chains and deploy templates, the same every time for
//! the same arguments.

use std::fmt::Write as _;
use std::path::Path;

pub struct Shape {
    pub nodes: usize,
    pub files: usize,
    pub rollout_groups: usize,
    /// Every `chain`-th node starts a new depends_on chain; the others
    /// depend on the node before them.
    pub chain: usize,
    pub templates: usize,
    /// Only fake-hardware nodes, each BMC with this latency (e.g. `200ms`).
    pub fake_latency: Option<&'static str>,
}

impl Shape {
    /// The fleet the validate and plan benchmarks measure, and the others
    /// start from: 100 files, 10 rollout groups, depends_on chains of 20,
    /// 3 deploy templates, fake-hardware, ipmi and redfish nodes in turn.
    pub fn mixed(nodes: usize) -> Self {
        Self {
            nodes,
            files: 100,
            rollout_groups: 10,
            chain: 20,
            templates: 3,
            fake_latency: None,
        }
    }
}

pub fn write_fleet(dir: &Path, shape: &Shape) {
    std::fs::create_dir_all(dir.join("nodes")).unwrap();
    std::fs::create_dir_all(dir.join("drivers")).unwrap();
    let mut rivet = String::from(
        "[conductor]\nworkers = 64\n\n[hardware]\nenabled_hardware_types = [\"fake-hardware\", \"ipmi\", \"redfish\"]\n",
    );
    for g in 0..shape.rollout_groups {
        write!(
            rivet,
            "\n[[rollout]]\nname = \"group{g}\"\nmax_parallel = 50\nmax_failures = 5\n"
        )
        .unwrap();
    }
    std::fs::write(dir.join("rivet.toml"), rivet).unwrap();

    let mut drivers = String::new();
    for t in 0..shape.templates {
        write!(
            drivers,
            "[[deploy_template]]\nname = \"CUSTOM_TEMPLATE_{t}\"\nsteps = [{{ interface = \"bios\", step = \"apply_configuration\", priority = {}, args = {{ settings = [{{ name = \"Setting{t}\", value = \"Enabled\" }}] }} }}]\n\n",
            150 + t
        )
        .unwrap();
    }
    std::fs::write(dir.join("drivers/templates.toml"), drivers).unwrap();

    let per_file = shape.nodes.div_ceil(shape.files);
    for f in 0..shape.files {
        let mut text = String::new();
        for i in f * per_file..((f + 1) * per_file).min(shape.nodes) {
            let driver = match shape.fake_latency {
                Some(_) => "fake-hardware",
                None => ["fake-hardware", "ipmi", "redfish"][i % 3],
            };
            write!(
                text,
                "[[node]]\nname = \"node{i:06}\"\ndriver = \"{driver}\"\n"
            )
            .unwrap();
            if let Some(latency) = shape.fake_latency {
                writeln!(
                    text,
                    "bmc = {{ address = \"fake://node{i:06}?latency={latency}\" }}"
                )
                .unwrap();
            }
            match driver {
                "ipmi" => writeln!(
                    text,
                    "bmc = {{ address = \"ipmi://10.{}.{}.{}\", username = \"admin\", password_env = \"BMC_PASSWORD\" }}\ninstance = {{ kernel = \"http://images.example/vmlinuz\", ramdisk = \"http://images.example/initrd\" }}",
                    i >> 16 & 255,
                    i >> 8 & 255,
                    i & 255
                )
                .unwrap(),
                "redfish" => writeln!(
                    text,
                    "bmc = {{ address = \"redfish+https://10.{}.{}.{}/redfish/v1/Systems/1\", username = \"admin\", password_env = \"BMC_PASSWORD\", verify_tls = false }}\ninstance = {{ image = \"http://images.example/ubuntu.iso\" }}",
                    i >> 16 & 255,
                    i >> 8 & 255,
                    i & 255
                )
                .unwrap(),
                _ => {}
            }
            writeln!(
                text,
                "rollout = \"group{}\"",
                i % shape.rollout_groups.max(1)
            )
            .unwrap();
            if shape.templates > 0 && i % 4 == 0 && driver != "ipmi" {
                writeln!(
                    text,
                    "traits = [\"CUSTOM_TEMPLATE_{}\"]",
                    i % shape.templates
                )
                .unwrap();
            }
            if shape.chain > 0 && i % shape.chain != 0 {
                writeln!(text, "depends_on = [\"node{:06}\"]", i - 1).unwrap();
            }
            text.push_str("desired = { provision = \"active\", power = \"on\" }\n\n");
        }
        std::fs::write(dir.join(format!("nodes/rack{f:03}.toml")), text).unwrap();
    }
}
