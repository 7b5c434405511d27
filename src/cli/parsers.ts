/** Option-value parsers shared by the commands: a bad value is a clear usage error. */
import { InvalidArgumentError } from "commander";

export function integer(min: number, max: number) {
  return (text: string): number => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`expected an integer in ${min}..${max}`);
    }
    return value;
  };
}

/** A repeatable `key=value` option, collected into one object. */
export function param(text: string, previous: Record<string, string>): Record<string, string> {
  const eq = text.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError(`expected key=value, got ${text}`);
  return { ...previous, [text.slice(0, eq)]: text.slice(eq + 1) };
}

/** A number of seconds in (0, 600]. */
export function seconds(text: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value <= 0 || value > 600) {
    throw new InvalidArgumentError("expected a number of seconds in (0, 600]");
  }
  return value;
}

/** Like `seconds`, but 0 is allowed (e.g. no warm-up). */
export function secondsOrZero(text: string): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || value < 0 || value > 600) {
    throw new InvalidArgumentError("expected a number of seconds in [0, 600]");
  }
  return value;
}

/** Comma-separated integers in min..max, e.g. client counts `1,16,64`. */
export function integerList(min: number, max: number, what: string) {
  return (text: string): number[] => {
    const values = text.split(",").map((s) => (s.trim() === "" ? NaN : Number(s.trim())));
    if (values.some((n) => !Number.isInteger(n) || n < min || n > max)) {
      throw new InvalidArgumentError(`expected comma-separated ${what} in ${min}..${max}`);
    }
    return values;
  };
}

/** Comma-separated names, each one of `choices`; duplicates dropped, order kept. */
export function choiceList<T extends string>(choices: readonly T[]) {
  return (text: string): T[] => {
    const wanted = text.split(",").map((s) => s.trim());
    const unknown = wanted.filter((w) => !(choices as readonly string[]).includes(w));
    if (unknown.length > 0) {
      throw new InvalidArgumentError(
        `unknown ${unknown.map((u) => JSON.stringify(u)).join(", ")}: expected some of ${choices.join(", ")}`,
      );
    }
    return [...new Set(wanted as T[])];
  };
}
