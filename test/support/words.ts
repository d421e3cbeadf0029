// Whether an answer shows a word: for checks that de-identified data names nobody. The answer also holds random
// ids, pseudonyms and sealed paging links, which contain a short name like "Amy" by chance now and then (base64url);
// a word stands apart from such characters.
export function mentions(text: string, word: string): boolean {
  const escaped = word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  return new RegExp(`(?<![A-Za-z0-9_-])${escaped}(?![A-Za-z0-9_-])`).test(text);
}
