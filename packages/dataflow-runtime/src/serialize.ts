/** The documented JSON form of a graph and its schedule (schema in README.md). */
import type { Kernel, Section } from './execute.js';
import type { StepGraph } from './types.js';

export const GRAPH_SCHEMA = 'patchflow.dataflow-graph/1';

export interface GraphJson {
  schema: typeof GRAPH_SCHEMA;
  meta: StepGraph['meta'];
  tensors: StepGraph['tensors'];
  ops: StepGraph['ops'];
  kernels: Kernel[];
  schedule: {
    /** Pipeline schedule of each dataflow section; null when only kernels were planned (KBK). */
    kind: 'gpipe-per-section' | 'kernel-by-kernel';
    bubbleFormula: string;
    sections: Section[];
  };
}

export function graphToJson(g: StepGraph, kernels: Kernel[], sections: Section[], kind: GraphJson['schedule']['kind']): GraphJson {
  return {
    schema: GRAPH_SCHEMA,
    meta: g.meta,
    tensors: g.tensors,
    ops: g.ops,
    kernels,
    schedule: { kind, bubbleFormula: kind === 'gpipe-per-section' ? '(p - 1) / (m + p - 1), p = tiled kernels in the section, m = micro-batch tiles' : '0 (kernels run one after another)', sections },
  };
}
