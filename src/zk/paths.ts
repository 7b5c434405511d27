/**
 * ZooKeeper path rules (PathUtils.validatePath and the parent/child split of DataTree), as
 * ../shared/ZOOKEEPER.md section 9 describes them. JS strings are UTF-16 like Java's, so the
 * code-unit checks port unchanged.
 */

/** PathUtils.validatePath: true when `path` is a legal absolute znode path. */
export function validatePath(path: string): boolean {
  const length = path.length;
  if (length === 0 || path.charCodeAt(0) !== 0x2f) return false;
  if (length === 1) return true;
  if (path.charCodeAt(length - 1) === 0x2f) return false;
  let last = 0x2f;
  for (let i = 1; i < length; last = path.charCodeAt(i), i++) {
    const c = path.charCodeAt(i);
    if (c === 0) return false;
    if (c === 0x2f) {
      if (last === 0x2f) return false; // empty segment
    } else if (c === 0x2e) {
      // A segment that is exactly "." or "..".
      const endsSegment = i + 1 === length || path.charCodeAt(i + 1) === 0x2f;
      if (endsSegment && last === 0x2f) return false;
      if (endsSegment && last === 0x2e && path.charCodeAt(i - 2) === 0x2f) return false;
    } else if (
      (c >= 0x01 && c <= 0x1f) ||
      (c >= 0x7f && c <= 0x9f) ||
      (c >= 0xd800 && c <= 0xf8ff) ||
      c >= 0xfff0
    ) {
      return false;
    }
  }
  return true;
}

/**
 * The text before the last '/', with "" (the parent of a top-level node) meaning the root.
 * Not validated: the parent of "/a//b" is "/a/", which no node has, hence NoNode.
 */
export function parentOf(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash <= 0 ? "/" : path.slice(0, slash);
}

/** The text after the last '/': a node's name among its parent's children. */
export function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}
