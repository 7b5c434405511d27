/**
 * A key-value client over TaraClient, for clusters replicating the reference key-value state
 * machine (src/tara/kv/kv-state-machine.ts): commands and replies are its msgpack encodings.
 */
import {
  decodeKvReply,
  encodeKvOp,
  type KvOp,
  type KvResult,
} from "../tara/kv/kv-state-machine.js";
import { TaraClient, type TaraClientOptions } from "./tara-client.js";

/** The state machine refused the command (e.g. a key that is too long). */
export class KvError extends Error {
  override readonly name = "KvError";
}

export class KvClient {
  readonly client: TaraClient;

  /** Wraps a client, or creates one from its options. */
  constructor(client: TaraClient | TaraClientOptions) {
    this.client = client instanceof TaraClient ? client : new TaraClient(client);
  }

  connect(): Promise<void> {
    return this.client.connect();
  }

  async get(key: string): Promise<string | null> {
    return (await this.execute({ type: "get", key }, "get")).value;
  }

  async put(key: string, value: string): Promise<void> {
    await this.execute({ type: "put", key, value }, "put");
  }

  /** Whether the key existed. */
  async delete(key: string): Promise<boolean> {
    return (await this.execute({ type: "delete", key }, "delete")).existed;
  }

  /** Sets `value` iff the current value is `expected` (null: absent); whether it did. */
  async cas(key: string, expected: string | null, value: string): Promise<boolean> {
    return (await this.execute({ type: "cas", key, expected, value }, "cas")).ok;
  }

  close(): Promise<void> {
    return this.client.close();
  }

  private async execute<T extends KvResult["type"]>(
    op: KvOp,
    type: T,
  ): Promise<Extract<KvResult, { type: T }>> {
    const reply = decodeKvReply(await this.client.submit(encodeKvOp(op)));
    if (reply.type === "error") throw new KvError(reply.message);
    if (reply.type !== type) throw new KvError(`expected a ${type} reply, got ${reply.type}`);
    return reply as Extract<KvResult, { type: T }>;
  }
}
