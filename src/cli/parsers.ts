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
