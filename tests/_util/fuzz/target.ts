/**
 * What a target of the mutation campaign provides: its real seed inputs with
 * their anatomy, and a function that feeds one mutated input to the reader
 * (or to the commands) and checks the oracles.
 *
 * @module
 */

import type { Anatomy, Mutated, Rng } from "./mutate.ts";

/** One real input a target mutates. */
export interface SeedInput {
  /** Short name (`q72-qboot-unplugged.mig`). */
  name: string;
  /** The bytes. */
  bytes: Uint8Array;
  /** Where its fields and sections are. */
  anatomy: Anatomy;
}

/** What a case gets besides its input. */
export interface CaseContext {
  /** A private, empty folder for the case's files (emptied after the case). */
  workDir: string;
  /** The seed input the case was mutated from. */
  seed: SeedInput;
  /** The case's PRNG, after the mutation was drawn (for choices the run makes). */
  rng: Rng;
  /** `ci`: leave out the slowest steps in most cases (the CI campaign's time budget); `full`: not. */
  budget: "ci" | "full";
  /**
   * Record something worth counting that is not a failure (e.g. two commands
   * failing with different error codes of the same class); the campaign
   * counts notes by text.
   */
  note(text: string): void;
}

/** A reader (or a set of commands) under the campaign. */
export interface FuzzTarget {
  /** Name used on the command line and in reports (`migration-cli`). */
  name: string;
  /** One line: which reader, which oracles. */
  description: string;
  /** Timeout of one case on an idle machine, in milliseconds (the campaign scales it). */
  timeoutMs: number;
  /**
   * A heavy target (inputs of hundreds of MB): `deno task fuzz` runs it only when named, never
   * by default and never in CI. @default {false}
   */
  heavy?: boolean;
  /** Load the seed inputs (once per worker). */
  seeds(): Promise<SeedInput[]>;
  /**
   * Mutate a seed input. Default: {@linkcode mutate} with the seed's anatomy.
   * A target may wrap or post-process (e.g. put a mutated stream in a container).
   */
  mutate?(seed: SeedInput, rng: Rng): Mutated;
  /**
   * Feed one input and check the oracles.
   *
   * @returns The outcome label (`exit-0`, `FormatError:elf/bad-segment`, …).
   * @throws {OracleFailure} when an oracle does not hold.
   */
  run(input: Uint8Array, context: CaseContext): Promise<string>;
}
