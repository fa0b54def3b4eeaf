-- :Dg {rewrite|fill|status|restart}; the plugin itself starts with require('dg').setup({...}).
if vim.g.loaded_dg then
  return
end
vim.g.loaded_dg = true

vim.api.nvim_create_user_command('Dg', function(opts) require('dg.commands').run(opts) end, {
  nargs = 1,
  range = true,
  desc = 'dg-lsp: rewrite (visual selection), fill, status, restart',
  complete = function(lead)
    return vim.tbl_filter(function(name) return vim.startswith(name, lead) end, require('dg.commands').names)
  end,
})
