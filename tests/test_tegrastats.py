"""The tegrastats parser on real lines from several boards and L4T releases."""

import pytest

from edgeprof.sensors.tegrastats import parse_tegrastats_line

NANO = ("RAM 1180/3965MB (lfb 1x2MB) SWAP 149/1024MB (cached 7MB) IRAM 0/252kB(lfb 252kB) CPU [30%@1036,33%@1036,"
        "28%@1036,26%@1036] EMC_FREQ 10%@1600 GR3D_FREQ 0%@76 NVENC 716 NVDEC 716 APE 25 PLL@57C CPU@60.5C PMIC@100C "
        "GPU@59C AO@65C thermal@59.75C POM_5V_IN 4520/4680 POM_5V_GPU 0/0 POM_5V_CPU 1078/1205")
ORIN = ("10-08-2026 04:38:21 RAM 1343/7620MB (lfb 157x4MB) SWAP 165/3810MB (cached 3MB) CPU [0%@1497,0%@729,0%@729,"
        "0%@729,0%@729,0%@729] EMC_FREQ 15%@204 GR3D_FREQ 0%@[305] NVDEC off NVJPG off VIC off OFA off APE 200 "
        "cpu@48.562C soc2@46.593C soc0@48.625C gpu@49.625C tj@49.312C soc1@47.937C VDD_IN 5251mW/8535mW "
        "VDD_CPU_GPU_CV 512mW/1944mW VDD_SOC 2720mW/3659mW")
XAVIER = ("RAM 2764/15698MB (lfb 2863x4MB) SWAP 0/7849MB (cached 0MB) CPU [12%@1190,8%@1190,off,off,5%@1190,3%@1190,"
          "off,off] EMC_FREQ 0% GR3D_FREQ 0%@[318,318] APE 150 MTS fg 0% bg 0% AO@33.5C GPU@33C Tboard@32C "
          "Tdiode@33.5C AUX@32.5C CPU@35C thermal@33.2C PMIC@50C GPU 0/0 CPU 310/310 SOC 1241/1241 CV 0/0 "
          "VDDRQ 155/155 SYS5V 1566/1566")
ORIN_JP6_MAX = ("11-02-2026 10:01:02  RAM 3201/62841MB (lfb 9x4MB) CPU [2%@2201,1%@2201,off,off] GR3D_FREQ 45%@[1300,1300] "
                "cpu@-256C gpu@51.2C VDD_GPU_SOC 6133mW/5210mW/7001mW VDD_CPU_CV 1200mW/1100mW/1400mW "
                "VIN_SYS_5V0 4000mW/3900mW/4100mW")


def test_nano_line():
    s = parse_tegrastats_line(NANO)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (1180, 3965, 149)
    assert s.cpu_load_pct == [30, 33, 28, 26] and s.cpu_freq_mhz == [1036] * 4
    assert (s.emc_load_pct, s.emc_freq_mhz, s.gpu_load_pct, s.gpu_freq_mhz) == (10, 1600, 0, 76)
    assert s.temps_c["CPU"] == 60.5 and s.temps_c["thermal"] == 59.75 and s.temps_c["PMIC"] == 100
    assert s.rails_mw == {"POM_5V_IN": 4520, "POM_5V_GPU": 0, "POM_5V_CPU": 1078}
    assert s.rails_avg_mw["POM_5V_IN"] == 4680
    assert (s.board_power_mw, s.board_power_source) == (4520, "POM_5V_IN")


def test_orin_line_with_date_and_mw_units():
    s = parse_tegrastats_line(ORIN)
    assert s.timestamp == "10-08-2026 04:38:21"
    assert s.gpu_freq_mhz == 305 and len(s.cpu_load_pct) == 6
    assert s.temps_c["tj"] == 49.312 and s.temps_c["cpu"] == 48.562
    assert s.rails_mw == {"VDD_IN": 5251, "VDD_CPU_GPU_CV": 512, "VDD_SOC": 2720}
    assert s.board_power_source == "VDD_IN" and s.board_power_mw == 5251


def test_xavier_line_with_off_cores_and_two_gpcs_and_no_input_rail():
    s = parse_tegrastats_line(XAVIER)
    assert s.cpu_load_pct == [12, 8, None, None, 5, 3, None, None] and s.cpu_online == 4
    assert s.emc_load_pct == 0 and s.emc_freq_mhz is None
    assert s.gpu_freq_mhz == 318
    assert s.temps_c["Tboard"] == 32 and "MTS" not in s.rails_mw
    assert s.rails_mw["CPU"] == 310 and s.rails_mw["SYS5V"] == 1566
    assert s.board_power_source == "sum of rails" and s.board_power_mw == 0 + 310 + 1241 + 0 + 155 + 1566


def test_cur_avg_max_rails_extra_spaces_and_sensor_off():
    s = parse_tegrastats_line(ORIN_JP6_MAX)
    assert s.rails_mw == {"VDD_GPU_SOC": 6133, "VDD_CPU_CV": 1200, "VIN_SYS_5V0": 4000}
    assert s.rails_avg_mw["VDD_GPU_SOC"] == 5210
    assert "cpu" in s.temps_off and "cpu" not in s.temps_c and s.temps_c["gpu"] == 51.2
    assert s.gpu_load_pct == 45 and s.gpu_freq_mhz == 1300


@pytest.mark.parametrize("line", ["", "garbage with no fields", "RAM x/yMB CPU [", "VDD_IN 12"])
def test_unparseable_lines_give_an_empty_sample_not_an_error(line):
    s = parse_tegrastats_line(line)
    assert s.board_power_mw is None and s.rails_mw == {}
