/**
 * The virtio-mem device of the real s2-holes-100M scenarios (256 MiB region
 * at 0x100000000, 2 MiB blocks, blocks 0-13 and 64-99 plugged) in the plug
 * map input formats.
 *
 * @module
 */

/** The s2 plug map as JSON v1. */
export const S2_JSON = {
  version: 1,
  devices: [{
    path: "0000:00:01.0",
    ramblock: "0000:00:01.0/vmem0mem",
    memaddr: 4294967296,
    "region-size": 268435456,
    "block-size": 2097152,
    node: 0,
    "usable-region-size": 268435456,
    size: 104857600,
    "requested-size": 104857600,
    plugged: [[0, 14], [64, 36]],
  }],
};

/**
 * The `query-memory-devices` reply for the s2 device.
 *
 * @param over Fields of `data` to replace or add.
 * @returns A one-device reply list.
 */
export const qmpReply = (over: Record<string, unknown> = {}) => [{
  type: "virtio-mem",
  data: {
    "block-size": 2097152,
    id: "vmem0",
    "max-size": 268435456,
    memaddr: 4294967296,
    memdev: "/objects/vmem0mem",
    node: 0,
    "requested-size": 104857600,
    size: 104857600,
    ...over,
  },
}];
